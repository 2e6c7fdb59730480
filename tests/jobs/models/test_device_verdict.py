"""The memory verdict of a job on several devices is per device: a GPU holds one rank, a CPU all of them."""

from jobs.models.fits import KNOWN_SHAPES, Device, verdicts
from jobs.spec import SMOLLM2_BASE_MODEL, parse_spec


def test_a_cpu_holds_every_rank_and_a_gpu_one():
    cpu, gpu = Device("default", "CPU (16 cores)", 64 << 30), Device("cuda-0_1", "NVIDIA A100 80GB", 80 << 30)
    raw = {"base_model": SMOLLM2_BASE_MODEL, "dataset": "example", "batch_size": 2, "packing": False,
           "compute_dtype": "float32"}
    one = verdicts(parse_spec(raw), KNOWN_SHAPES[SMOLLM2_BASE_MODEL], [cpu, gpu])
    four = verdicts(parse_spec({**raw, "devices": 4}), KNOWN_SHAPES[SMOLLM2_BASE_MODEL], [cpu, gpu])
    assert four[0].peak == 4 * one[0].peak and four[0].share == 4 * one[0].share
    assert four[1].peak == one[1].peak == one[1].estimate.peak
