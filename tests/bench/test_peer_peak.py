"""LLaMA-Factory's peak on this machine: the step its progress bar is at, and the high-water mark by step."""

from bench.peer_peak import last_step, per_step


def test_the_step_is_the_progress_bars_last_count(tmp_path):
    log = tmp_path / "lf.log"
    log.write_bytes(b"loading\r  0%|   | 0/120 [00:00<?, ?it/s]\r  2%|   | 3/120 [00:09<05:50, 3.0s/it]")
    assert last_step(log) == 3
    assert last_step(tmp_path / "missing.log") == 0


def test_the_high_water_mark_by_step_keeps_the_highest_sample_of_each_step():
    timeline = [{"t": 0.5, "step": 0, "vmhwm_mb": 900.0}, {"t": 1.0, "step": 0, "vmhwm_mb": 1500.0},
                {"t": 1.5, "step": 1, "vmhwm_mb": 1600.0}, {"t": 2.0, "step": 1, "vmhwm_mb": 1650.0}]
    assert per_step(timeline) == [{"step": 0, "t": 0.5, "hwm_mb": 1500.0}, {"step": 1, "t": 1.5, "hwm_mb": 1650.0}]
