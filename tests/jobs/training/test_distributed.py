"""One job on several devices: DDP through the HF Trainer, here with two gloo processes on this CPU (the GPU path is
the same Trainer with nccl, not run here)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import SpecError, parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE, REPO_ROOT
from jobs.training import distributed
from jobs.training.distributed import free_port, launch_command
from jobs.training.train import train

# fp32, no dropout: the two runs differ only in how the batch is split and summed (measured: 1e-6 on the loss).
SAME = {"max_steps": 3, "max_length": 256, "logging_steps": 1, "eval_fraction": 0, "lora_dropout": 0,
        "compute_dtype": "float32", "save_steps": 3, "sample_prompts": 0, "learning_rate": 5e-3}
TOLERANCE = 1e-4
"""Relative: each step's loss and gradient norm of two ranks against one process with their batch together."""


@pytest.mark.slow
def test_two_gloo_ranks_train_the_curve_of_one_process_with_the_doubled_batch(tmp_path, demo_model_dir):
    dataset, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path / "data")
    ranks_dir, args_file, metrics_file = tmp_path / "ranks", tmp_path / "args.json", tmp_path / "ranks.jsonl"
    spec = {**SAME, "base_model": "demo", "dataset": "example", "batch_size": 2, "devices": 2}
    args_file.write_text(json.dumps({"spec": spec, "out_dir": str(ranks_dir), "base_model": str(demo_model_dir),
                                     "dataset": str(dataset), "metrics": str(metrics_file)}))
    ranks = subprocess.Popen(launch_command(2, "jobs.training.ranks", [str(args_file)], free_port()), cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = []  # meanwhile, one process here with both ranks' batch
    single = train(parse_spec({**spec, "batch_size": 4, "devices": 1}), tmp_path / "one", str(demo_model_dir),
                   dataset, lambda step, values, total: one.append((step, values)), lambda: False)
    output, _ = ranks.communicate(timeout=600)
    assert ranks.returncode == 0, output[-3000:]

    two = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    curve = {entry["step"]: (entry["loss"], entry["grad_norm"]) for entry in two if "loss" in entry}
    expected = {step: (values["loss"], values["grad_norm"]) for step, values in one if "loss" in values}
    assert sorted(curve) == sorted(expected) == [1, 2, 3]
    assert len([entry for entry in two if "loss" in entry]) == 3  # rank 0 alone logged each step, once
    for step, (loss, grad_norm) in expected.items():
        assert curve[step] == pytest.approx((loss, grad_norm), rel=TOLERANCE), step
    # The adapter is saved once (rank 0), and is the one the single process trained.
    assert output.count("adapter saved to") == 1 and (ranks_dir / "adapter" / "adapter_config.json").is_file()
    assert sorted(path.name for path in ranks_dir.iterdir() if "adapter" in path.name) == ["adapter"]
    theirs, ours = load_file(ranks_dir / "adapter" / "adapter_model.safetensors"), load_file(
        single.adapter_dir / "adapter_model.safetensors")
    assert theirs.keys() == ours.keys()
    assert all(torch.allclose(theirs[name], ours[name], rtol=1e-3, atol=1e-5) for name in ours)
    checkpoint = ranks_dir / "checkpoints" / "checkpoint-3"
    assert {"rng_state_0.pth", "rng_state_1.pth", "studio-complete.json"} <= {p.name for p in checkpoint.iterdir()}


def test_several_devices_run_the_trainers_ddp_with_the_devices_backend():
    spec = parse_spec({"base_model": "demo", "dataset": "example", "devices": 4, "batch_size": 2,
                       "learning_rate": 1e-3, "num_epochs": 1, "packing": False})
    kwargs = {machine.device: resolve(spec, Base(hidden=64), machine).trainer_kwargs()
              for machine in (Machine("cpu", bf16=False), Machine("cuda", bf16=True))}
    assert kwargs["cpu"]["ddp_backend"] == "gloo" and kwargs["cuda"]["ddp_backend"] == "nccl"
    assert all(k["average_tokens_across_devices"] and k["ddp_find_unused_parameters"] is False
               for k in kwargs.values())
    one = resolve(spec.model_copy(update={"devices": 1}), Base(hidden=64), Machine("cpu", bf16=False))
    assert "ddp_backend" not in one.trainer_kwargs()


@pytest.mark.parametrize("devices", [0, -1, 65, "most", 2.5])
def test_a_device_count_out_of_range_is_refused_naming_devices(devices):
    with pytest.raises(SpecError) as refused:
        parse_spec({"base_model": "demo", "dataset": "example", "devices": devices})
    assert [p.field for p in refused.value.problems] == ["devices"]
    assert "'all' (every device of one host that may take it) or from 1 to 64" in str(refused.value)
    assert parse_spec({"devices": "all"}).devices == "all" and parse_spec({"devices": "3"}).devices == 3


def test_one_process_is_rank_zero_and_takes_every_core(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.is_main() and not distributed.distributed()
    assert distributed.agreed_stop("cancel") == "cancel" and distributed.threads_per_rank(8) == 8
    assert distributed.local_device("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not distributed.is_main() and distributed.threads_per_rank(8) == 4
    assert distributed.local_device("cuda") == "cuda:1" and distributed.local_device("cpu") == "cpu"
    command = launch_command(2, "jobs.training.ranks", ["a.json"], 29555)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc-per-node=2" in command
