"""Speed options, tracking and long inputs, resolved per machine: what each machine runs of what the spec asked, the
RoPE parameters the base loads with, where a tracker writes, and what the memory estimate makes of them."""

from pathlib import Path

import pytest

from jobs.models.fits import KNOWN_SHAPES, job_estimate
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.run_settings.speed import ALL_KERNELS, COMPILE, rope_problems
from jobs.run_settings.tracking import tracking_environment_values, tracking_problem, tracking_text
from jobs.spec import SMOLLM2_BASE_MODEL, parse_spec

PLANNED = {"batch_size": 2, "learning_rate": 1e-3, "num_epochs": 1, "packing": True}
ASKS_ALL = {**PLANNED, "attn_implementation": "flash_attention_2", "liger_kernel": True, "torch_compile": True}
DEMO = Base(hidden=128, context=1024, rope=(("rope_theta", 10000.0), ("rope_type", "default")))


def test_a_cpu_worker_runs_what_it_can_and_says_what_it_does_not():
    settings = resolve(parse_spec(ASKS_ALL), DEMO, Machine("cpu", bf16=False, kernels=frozenset({COMPILE})))
    assert settings.attn_implementation == "sdpa" and not settings.liger_kernel and settings.torch_compile
    assert any("flash_attention_2 needs CUDA" in note and "runs sdpa" in note for note in settings.notes)
    assert any("liger_kernel needs CUDA" in note for note in settings.notes)
    kwargs = settings.trainer_kwargs()
    assert kwargs["torch_compile"] is True and kwargs["use_liger_kernel"] is False
    assert settings.model_kwargs() == {"attn_implementation": "sdpa"}


def test_a_gpu_worker_with_the_packages_runs_them_all():
    # No GPU here: the machine is described, not probed (jobs.models.loading.machine probes a real one).
    settings = resolve(parse_spec(ASKS_ALL), DEMO, Machine("cuda", bf16=True, kernels=ALL_KERNELS))
    assert (settings.attn_implementation, settings.liger_kernel, settings.torch_compile) == (
        "flash_attention_2", True, True) and not settings.notes
    assert settings.trainer_kwargs()["use_liger_kernel"] is True


def test_torch_compile_is_dropped_in_words_where_dynamo_is_off(monkeypatch):
    from jobs.run_settings.speed import kernels_here

    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")  # as the tests run: torch.compile would be a silent no-op
    here = Machine("cpu", bf16=False, kernels=kernels_here("cpu"))
    settings = resolve(parse_spec({**PLANNED, "torch_compile": True}), DEMO, here)
    assert not settings.torch_compile and any("TORCHDYNAMO_DISABLE" in note for note in settings.notes)
    monkeypatch.delenv("TORCHDYNAMO_DISABLE")
    assert COMPILE in kernels_here("cpu")  # g++ is installed on these machines


@pytest.mark.parametrize(("scaling", "extra"), [("linear", {}), ("dynamic", {}),
                                                ("yarn", {"original_max_position_embeddings": 1024})])
def test_rope_scaling_keeps_the_bases_theta_and_adds_the_factor(scaling, extra):
    spec = parse_spec({**PLANNED, "rope_scaling": scaling, "rope_factor": 2.5, "max_length": 2048})
    settings = resolve(spec, DEMO, Machine("cpu", bf16=False))
    assert settings.model_kwargs()["rope_parameters"] == {"rope_theta": 10000.0, "rope_type": scaling,
                                                          "factor": 2.5, **extra}


@pytest.mark.parametrize(("scaling", "factor", "max_length", "base_type", "field", "words"), [
    ("linear", 2, 512, None, "rope_scaling", "not needed: max_length 512 fits the base's context of 1024"),
    ("yarn", 2, 4096, None, "rope_factor", "short of max_length 4096: use at least 4"),
    ("none", None, 3000, None, "max_length", "3000 exceeds the base's context of 1024 tokens"),
    ("linear", 4, 4096, "llama3", "rope_scaling", "already scales RoPE (llama3)"),
])
def test_rope_settings_the_base_cannot_use_are_refused_naming_the_field(scaling, factor, max_length, base_type,
                                                                        field, words):
    problems = dict(rope_problems(scaling, factor, max_length, 1024, base_type))
    assert words in problems[field]
    assert rope_problems("dynamic", 4, 4096, 1024, "default") == []


def test_the_memory_verdict_follows_the_length_and_the_attention():
    shape, cpu = KNOWN_SHAPES[SMOLLM2_BASE_MODEL], Machine("cpu", bf16=False)
    plain = job_estimate(parse_spec({**PLANNED, "base_model": SMOLLM2_BASE_MODEL}), shape, cpu).peak
    longer = job_estimate(parse_spec({**PLANNED, "base_model": SMOLLM2_BASE_MODEL, "max_length": 16384,
                                      "rope_scaling": "linear", "rope_factor": 2}), shape, cpu).peak
    eager = job_estimate(parse_spec({**PLANNED, "base_model": SMOLLM2_BASE_MODEL,
                                     "attn_implementation": "eager"}), shape, cpu).peak
    assert longer > 10 * plain and eager > plain  # T x T masks grow with the square; eager keeps probabilities


def test_trackers_write_in_the_run_folder_and_the_run_page_says_where(tmp_path):
    assert tracking_environment_values("tensorboard", tmp_path) == {
        "TENSORBOARD_LOGGING_DIR": str(tmp_path / "tracking" / "tensorboard")}
    mlflow = tracking_environment_values("mlflow", tmp_path)
    assert mlflow["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/tracking/mlflow/mlflow.db"
    assert tracking_environment_values("trackio", Path("."))["TRACKIO_DIR"] == "tracking/trackio"
    assert tracking_environment_values("none", tmp_path) == {}
    text = tracking_text(tmp_path, "tensorboard")
    assert "not written yet" in text and f"tensorboard --logdir {tmp_path}/tracking/tensorboard" in text
    assert tracking_text(tmp_path, "none") is None


def test_a_tracker_that_is_not_installed_is_refused_in_words():
    pytest.importorskip("tensorboard")
    assert tracking_problem("tensorboard") is None and tracking_problem("none") is None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        assert "mlflow is not installed on this studio (pip install mlflow-skinny)" in tracking_problem("mlflow")
    else:
        pytest.skip("mlflow is installed here")
