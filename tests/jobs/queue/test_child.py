"""The training child's recorded memory estimate: the profile it estimates with follows the dtype the run trains in."""

from __future__ import annotations

import json

from jobs.models.demo import ensure_demo_model
from jobs.queue import child
from jobs.spec import TrainSpec
from jobs.training.run_dtype import RECORD_NAME


def test_a_resumed_run_is_estimated_in_the_dtype_it_keeps(tmp_path, capsys):
    base = str(ensure_demo_model(tmp_path / "models"))  # 128 wide: 'auto' is float32 on any CPU
    run = tmp_path / "run"
    run.mkdir()
    fresh = child._memory_estimate(TrainSpec(), base, "cpu", run)
    assert "(cpu profile)" in capsys.readouterr().out
    (run / RECORD_NAME).write_text(json.dumps({"device": "cpu", "dtype": "bfloat16"}))  # how the run began
    resumed = child._memory_estimate(TrainSpec(), base, "cpu", run)
    assert "(cpu-bf16 profile)" in capsys.readouterr().out
    assert resumed < fresh  # 2-byte activations and LoRA
    assert child._memory_estimate(TrainSpec(compute_dtype="float32"), base, "cpu", run) == fresh  # the spec wins
