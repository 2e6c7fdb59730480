"""Getting jobs run: the Huey transport, workers, the per-job supervisor and child process, the reaper, and the
process ties (locks, PIDs) that keep one job per device. No torch outside `child` (and only lazily there)."""
