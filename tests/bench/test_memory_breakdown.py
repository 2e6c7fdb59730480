"""The memory breakdown's phase table: each phase's own peak, the later steps as one phase."""

from bench.memory_breakdown import phase_table


def _interval(label: str, peak: float, start: float = 0.0, seconds: float = 1.0) -> dict:
    return {"label": label, "peak_mb": peak, "rss_start_mb": start, "rss_end_mb": start, "file_end_mb": 0.0,
            "anon_end_mb": start, "s": seconds}


def test_later_steps_are_one_phase_with_their_highest_peak_and_the_first_step_its_own():
    table = phase_table([
        _interval("base_load", 900, 500), _interval("step 1: forward + backward", 2000, 950),
        _interval("step 2: forward + backward", 2100, 1000), _interval("sample answers", 1200, 1000),
        _interval("step 3: forward + backward", 2050, 1000, seconds=2.0)])
    rows = {row["phase"]: row for row in table}
    assert list(rows) == ["base_load", "first step: forward + backward", "later steps: forward + backward",
                          "sample answers"]
    later = rows["later steps: forward + backward"]
    assert (later["peak_mb"], later["times"], later["s"], later["rss_start_mb"]) == (2100, 2, 3.0, 1000)
    assert rows["first step: forward + backward"]["peak_mb"] == 2000


def test_arms_train_as_a_worker_does_with_jemalloc_and_the_glibc_arm_without(monkeypatch):
    import jobs.queue.spare as spare
    from bench.memory_breakdown import arm_env

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(spare, "jemalloc_library", lambda: "/lib/libjemalloc.so.2")
    assert arm_env("default")["LD_PRELOAD"] == "/lib/libjemalloc.so.2"
    assert arm_env("jemalloc narenas:1")["MALLOC_CONF"] == "narenas:1"
    assert "LD_PRELOAD" not in arm_env("glibc malloc")
