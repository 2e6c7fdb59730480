"""Run settings: what a spec means on one base and one machine (jobs.run_settings.settings.resolve), stated once for
training, the plain TRL script and the memory estimate. Pure Python: no torch, no data, no models."""
