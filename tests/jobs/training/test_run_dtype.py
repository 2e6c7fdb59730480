"""A resumed run keeps the compute dtype its first attempt computed in, wherever it resumes."""

from __future__ import annotations

import json

import pytest
import torch

from jobs.models import loading
from jobs.spec import TrainSpec
from jobs.training.run_dtype import RECORD_NAME, dtype_for_run
from jobs.training.train import setup_device


def test_the_first_attempt_records_its_pick_and_later_ones_keep_it(tmp_path, capsys):
    assert dtype_for_run(tmp_path, "cpu", torch.bfloat16, "auto") is torch.bfloat16
    assert json.loads((tmp_path / RECORD_NAME).read_text()) == {"device": "cpu", "dtype": "bfloat16"}
    assert dtype_for_run(tmp_path, "cpu", torch.float32, "auto") is torch.bfloat16
    assert "compute dtype bfloat16, as this run began (this machine would pick float32" in capsys.readouterr().out
    assert json.loads((tmp_path / RECORD_NAME).read_text())["dtype"] == "bfloat16"


def test_a_dtype_the_spec_names_wins_and_is_recorded(tmp_path):
    dtype_for_run(tmp_path, "cpu", torch.bfloat16, "auto")
    assert dtype_for_run(tmp_path, "cpu", torch.float32, "float32") is torch.float32
    assert dtype_for_run(tmp_path, "cpu", torch.float32, "auto") is torch.float32


def test_another_kind_of_device_resolves_afresh(tmp_path):
    dtype_for_run(tmp_path, "cuda", torch.float16, "auto")
    assert dtype_for_run(tmp_path, "cpu", torch.float32, "auto") is torch.float32
    assert json.loads((tmp_path / RECORD_NAME).read_text()) == {"device": "cpu", "dtype": "float32"}


@pytest.mark.parametrize("torn", ["", "{", "[]", '{"device": "cpu", "dtype": "int8"}', '{"dtype": "bfloat16"}'])
def test_a_torn_or_foreign_record_is_replaced_by_this_attempts_pick(tmp_path, torn):
    (tmp_path / RECORD_NAME).write_text(torn)
    assert dtype_for_run(tmp_path, "cpu", torch.float32, "auto") is torch.float32
    assert json.loads((tmp_path / RECORD_NAME).read_text()) == {"device": "cpu", "dtype": "float32"}


def test_setup_device_resumes_on_a_cpu_without_native_bf16_in_the_dtype_it_began_in(tmp_path, monkeypatch):
    base = tmp_path / "wide-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"hidden_size": 576}))  # wide enough for bf16 where native
    run, spec = tmp_path / "run", TrainSpec()
    monkeypatch.setattr(loading, "native_bf16", lambda: True)
    assert setup_device(spec, run, str(base)).dtype is torch.bfloat16
    monkeypatch.setattr(loading, "native_bf16", lambda: False)  # the worker it resumes on emulates bf16
    assert setup_device(spec, run, str(base)).dtype is torch.bfloat16
    assert setup_device(spec, tmp_path / "new-run", str(base)).dtype is torch.float32  # a new run: this CPU's pick
