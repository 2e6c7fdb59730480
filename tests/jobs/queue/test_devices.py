"""The free memory a worker reports (jobs.queue.devices.reported_free): in steps of 1% of the device, so the plan
that quotes it reads the same from one heartbeat to the next, and never more than is free now."""

from jobs.queue.devices import reported_free

MIB, TOTAL = 1 << 20, 10_000 << 20  # a step of 100 MiB


def test_the_free_memory_is_reported_in_steps_that_hold_still_and_never_above_what_is_free():
    device = "test-device"
    readings = [5_030, 5_090, 5_010, 5_180, 5_210, 5_150, 4_990, 4_880, 6_000]  # MiB, as heartbeats read them
    reported = [reported_free(mib * MIB, TOTAL, device) // MIB for mib in readings]
    assert reported == [5_000, 5_000, 5_000, 5_000, 5_200, 5_100, 4_900, 4_800, 6_000]  # a drop shows at once
    assert all(shown <= free for shown, free in zip(reported, readings, strict=True))  # the safe side
    assert reported_free(700 * MIB, 1 * MIB, "tiny") == 700 * MIB  # a step is at least 1 MiB
