"""What 'auto' computes in on a CPU (jobs.run_settings.cpu_dtype), and where the choice shows: the memory verdict's
profile, the worker's device name, the plain TRL script."""

import pytest

from jobs.models.fits import KNOWN_SHAPES, Device, verdicts
from jobs.models.memory_inputs import CPU, CPU_BF16
from jobs.queue.devices import describe_device
from jobs.run_settings.cpu_dtype import (
    BF16_MIN_HIDDEN,
    NATIVE_BF16_LABEL,
    cpu_compute_dtype,
    hidden_size,
    native_bf16,
)
from jobs.spec import SMOLLM2_BASE_MODEL, parse_spec
from jobs.training.script import plain_trl_script
from tests.jobs.training.test_settings_agree import stated_settings

# Two lines of a real /proc/cpuinfo (an AMD EPYC with AVX512-BF16), cut to the flags that matter here.
EPYC_512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.mark.parametrize("text, native", [(EPYC_512, True), (AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True),
                                          ("bogus: avx512_bf16\n", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert native_bf16(cpuinfo) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert native_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize("spec_dtype, hidden, native, expected", [
    ("auto", 576, True, "bfloat16"),  # SmolLM2 on the EPYC-512: 1.51x at the same loss
    ("auto", 128, True, "float32"),  # the demo model: 5% slower in bf16
    ("auto", BF16_MIN_HIDDEN, True, "bfloat16"),
    ("auto", BF16_MIN_HIDDEN - 1, True, "float32"),
    ("auto", 4096, False, "float32"),  # emulated bf16: far slower
    ("auto", None, True, "float32"),  # width unknown (a hub id not downloaded)
    ("bfloat16", 128, False, "bfloat16"),  # a dtype the spec sets is kept
    ("float32", 4096, True, "float32"),
])
def test_auto_picks_bf16_only_for_a_wide_model_on_a_native_bf16_cpu(spec_dtype, hidden, native, expected):
    assert cpu_compute_dtype(spec_dtype, hidden, native) == expected


def test_hidden_size_comes_from_the_config(demo_model_dir, tmp_path):
    assert hidden_size(demo_model_dir) == 128
    assert hidden_size(tmp_path) is None and hidden_size("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    (tmp_path / "config.json").write_text("[not an object]")
    assert hidden_size(tmp_path) is None


def test_the_verdict_counts_bf16_memory_where_auto_picks_bf16():
    shape = KNOWN_SHAPES[SMOLLM2_BASE_MODEL]
    native = Device("w1", f"CPU (2 cores, {NATIVE_BF16_LABEL})", 24 * 2**30)
    plain = Device("w2", "CPU (2 cores)", 24 * 2**30)
    auto = parse_spec({"base_model": SMOLLM2_BASE_MODEL, "batch_size": 1})
    assert native.profile_for(auto, shape) is CPU_BF16 and plain.profile_for(auto, shape) is CPU
    on_native, on_plain = verdicts(auto, shape, [native, plain])
    assert on_native.estimate.peak < 0.85 * on_plain.estimate.peak  # activations and LoRA in 2 bytes, not 4
    set_bf16 = parse_spec({"base_model": SMOLLM2_BASE_MODEL, "batch_size": 1, "compute_dtype": "bfloat16"})
    assert plain.profile_for(set_bf16, shape) is CPU_BF16  # what the spec sets counts, native or not
    assert Device("gpu", "NVIDIA H100", 80 * 2**30).profile_for(set_bf16, shape).name == "cuda"


def test_a_worker_names_native_bf16_in_its_cpu_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU, even on a machine with a GPU
    name, _ = describe_device()
    assert name.startswith("CPU (") and (NATIVE_BF16_LABEL in name) is native_bf16()


# The plain script trains fixed values: the per-job fields are set here.
CHOSEN = {"packing": True, "num_epochs": 1, "learning_rate": 5e-3, "eval_fraction": 0.1, "batch_size": 1}


def test_the_plain_script_asks_the_cpu_only_for_a_wide_model(demo_model_dir, tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text('{"hidden_size": 576}')
    wide_script = plain_trl_script(parse_spec(CHOSEN), str(wide), "data.jsonl")
    assert "RUN = {**COMMON, **BY_MACHINE.get((DEVICE, BF16), {})}" in wide_script
    compile(wide_script, "train.py", "exec")
    found = {"CUDA": False}  # the script's own test of the CPU, run here, agrees with the studio's
    start = wide_script.index("BF16 =")
    exec("import os\n" + wide_script[start:wide_script.index("\n\n", start)], found)
    assert found["BF16"] is native_bf16()
    assert "('cpu', True): {\n        'compute_dtype': 'bfloat16'" in wide_script
    narrow = stated_settings(plain_trl_script(parse_spec(CHOSEN), str(demo_model_dir), "data.jsonl"))
    assert narrow["cpu", True] == narrow["cpu", False] and narrow["cpu", True]["compute_dtype"] == "float32"
    fixed = plain_trl_script(parse_spec({**CHOSEN, "compute_dtype": "float32"}), str(wide), "data.jsonl")
    assert "BF16 =" not in fixed and "    'compute_dtype': 'float32',\n" in fixed.split("BY_MACHINE")[0]
