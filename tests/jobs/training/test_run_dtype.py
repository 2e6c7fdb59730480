"""A resumed run keeps the compute dtype its first attempt computed in, wherever it resumes."""

from __future__ import annotations

import json

import pytest

from jobs.models import loading
from jobs.run_settings.settings import Base, Machine, compute_dtype
from jobs.spec import TrainSpec
from jobs.training.prepare import setup_device
from jobs.training.run_dtype import RECORD_NAME, began_in, record

WIDE = Base(hidden=576)  # wide enough for bf16 on a native-bf16 CPU
AUTO = TrainSpec()


def _resumed(run, device: str, bf16: bool, spec: TrainSpec = AUTO) -> str:
    return compute_dtype(spec, WIDE, Machine(device, bf16, began_in(run, device)))[0]


def test_the_first_attempt_records_its_pick_and_later_ones_keep_it(tmp_path):
    assert _resumed(tmp_path, "cpu", bf16=True) == "bfloat16"
    record(tmp_path, "cpu", "bfloat16")
    assert json.loads((tmp_path / RECORD_NAME).read_text()) == {"device": "cpu", "dtype": "bfloat16"}
    kept, note = compute_dtype(TrainSpec(), WIDE, Machine("cpu", False, began_in(tmp_path, "cpu")))
    assert kept == "bfloat16" and "as this run began (this machine would pick float32" in note


def test_a_dtype_the_spec_names_wins(tmp_path):
    record(tmp_path, "cpu", "bfloat16")
    assert _resumed(tmp_path, "cpu", bf16=True, spec=TrainSpec(compute_dtype="float32")) == "float32"


def test_another_kind_of_device_resolves_afresh(tmp_path):
    record(tmp_path, "cuda", "float16")
    assert began_in(tmp_path, "cpu") is None and _resumed(tmp_path, "cpu", bf16=False) == "float32"


@pytest.mark.parametrize("torn", ["", "{", "[]", '{"device": "cpu", "dtype": "int8"}', '{"dtype": "bfloat16"}'])
def test_a_torn_or_foreign_record_counts_as_none(tmp_path, torn):
    (tmp_path / RECORD_NAME).write_text(torn)
    assert began_in(tmp_path, "cpu") is None and _resumed(tmp_path, "cpu", bf16=False) == "float32"


def test_setup_device_resumes_on_a_cpu_without_native_bf16_in_the_dtype_it_began_in(tmp_path, monkeypatch):
    base = tmp_path / "wide-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"hidden_size": 576}))  # wide enough for bf16 where native
    run, spec = tmp_path / "run", TrainSpec()
    monkeypatch.setattr(loading, "pick_device", lambda: "cpu")
    monkeypatch.setattr(loading, "native_bf16", lambda: True)
    assert setup_device(spec, run, str(base)).compute_dtype == "bfloat16"
    monkeypatch.setattr(loading, "native_bf16", lambda: False)  # the worker it resumes on emulates bf16
    assert setup_device(spec, run, str(base)).compute_dtype == "bfloat16"
    assert setup_device(spec, tmp_path / "new-run", str(base)).compute_dtype == "float32"  # a new run: this CPU's
