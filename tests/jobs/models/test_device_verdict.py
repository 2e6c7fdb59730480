"""The memory verdict of a job on several devices is per device: a GPU holds one rank, a CPU all of its host's."""

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


def test_a_gang_nodes_cpu_holds_its_own_ranks_and_the_free_budget_is_shared_by_them_alone():
    from jobs.models.budget import free_budget

    raw = {"base_model": SMOLLM2_BASE_MODEL, "dataset": "example", "batch_size": 2, "packing": False,
           "compute_dtype": "float32", "devices": 4}
    alone = Device("a default", "CPU (16 cores)", 64 << 30)
    node = Device("a default", "CPU (16 cores)", 64 << 30, ranks=2, nodes=2, host="a")
    gpu_node = Device("b cuda-0_1", "NVIDIA A100 80GB", 80 << 30, ranks=2, nodes=2, host="b")
    four, two, gpu = verdicts(parse_spec(raw), KNOWN_SHAPES[SMOLLM2_BASE_MODEL], [alone, node, gpu_node])
    assert (four.ranks, two.ranks, gpu.ranks) == (4, 2, 1)  # a GPU node's device holds one rank of its two
    assert four.peak == 2 * two.peak and gpu.peak == gpu.estimate.peak
    assert free_budget(parse_spec(raw), [node]) == (32 << 30, node)
    assert free_budget(parse_spec(raw), [alone]) == (16 << 30, alone)
