"""The peer bench (bench/peers.py): its --smoke run takes every arm installed here end to end (a studio job through
the CLI and a worker, the plain TRL script, `trl sft`; LLaMA-Factory only where its venv was set up) and one
evaluator scores each adapter; and a capped `trl sft` run is projected, never passed off as a whole one."""

import math
from pathlib import Path

import pytest

from bench.peers import Outcome, parse_field_settings, record, summarize, trained_dtype
from tests.bench.smoke import run_smoke


@pytest.mark.slow
def test_the_smoke_run_measures_every_arm_on_one_evaluator(tmp_path):
    done, report = run_smoke("peers.py", tmp_path / "peers.json", timeout_s=900)
    assert set(report["summary"]) == {"studio", "script", "trl-cli"}
    for run in report["runs"]:
        assert run["wall_s"] > run["train_s"] > 0 and run["tokens_trained"] > 0, run
        assert run["peak_rss_mb"] > 100 and math.isfinite(run["held_out_loss"]), run
        assert run["seed"] == 42, run  # the first repeat: every arm with the studio's default seed
    studio = next(run for run in report["runs"] if run["arm"] == "studio")
    assert set(studio["phases_s"]) >= {"imports", "base_load", "training", "registration"}
    assert studio["registered_s"] < studio["wall_s"]  # the CLI sees the adapter registered, then exits
    assert studio["compute_dtype"] == "float32"  # the demo is too narrow for 'auto' to pick bf16 on any CPU
    assert report["summary"]["studio"]["studio_speedup"] == 1.0
    assert "studio faster" in done.stdout


def test_a_capped_run_is_projected_and_reports_no_loss():
    outcome = Outcome(wall_s=100.0, train_s=60.0, epochs=0.3, adapter_dir=Path("x"), train_rows=[{"messages": []}] * 10,
                      max_length=1024, peak_rss_bytes=2**30,
                      extra={"capped_at_steps": 12, "whole_run_steps": 120, "projected_wall_s": 100 + 60 * 9})

    class Tokens:
        def apply_chat_template(self, messages, **kwargs):
            return {"input_ids": [0] * 50}

    run = record("trl-cli", outcome, Tokens(), loss=1.23)
    assert run["wall_s"] == 640 and run["measured_wall_s"] == 100 and run["held_out_loss"] is None
    assert run["tokens_trained"] == 10 * 50 * 0.3 and run["tokens_per_s"] == 150 / 60  # tokens × epochs it ran
    table = summarize([run, {**run, "arm": "studio", "wall_s": 64.0, "held_out_loss": 0.5, "peak_rss_mb": 2048.0}],
                      ["studio", "trl-cli"])
    assert table["trl-cli"]["projected"] and table["trl-cli"]["studio_speedup"] == 10
    assert table["trl-cli"]["studio_memory_ratio"] == 0.5  # the peer's peak over the studio's, beside the speed
    assert "loss_minus_studio" not in table["trl-cli"]


def test_studio_fields_from_the_command_line_are_json_or_text_and_malformed_ones_are_refused():
    assert parse_field_settings(["compute_dtype=bfloat16", "lora_r=16", "packing=false"]) == {
        "compute_dtype": "bfloat16", "lora_r": 16, "packing": False}
    for malformed in ("compute_dtype", "=bfloat16"):
        with pytest.raises(SystemExit, match="NAME=VALUE"):
            parse_field_settings([malformed])


def test_the_studio_arm_reads_its_dtype_from_the_job_log():
    log = "preparing\ntraining on cpu (torch.bfloat16, nf4 + double quant, gradient checkpointing off): 320 rows\n"
    assert trained_dtype(log) == "bfloat16" and trained_dtype("no such line\n") is None


def test_held_out_losses_over_seeds_give_a_mean_difference_with_its_standard_error():
    def run(arm, loss):
        return {"arm": arm, "wall_s": 1.0, "train_s": 1.0, "tokens_per_s": 1.0, "peak_rss_mb": 1.0, "epochs": 1.0,
                "held_out_loss": loss}

    runs = [run("studio", loss) for loss in (0.25, 0.26, 0.27)] + [run("llamafactory", loss) for loss in (0.20, 0.30)]
    runs.append(run("trl-cli", None))
    table = summarize(runs, ["studio", "llamafactory", "trl-cli"])
    studio, peer = table["studio"], table["llamafactory"]
    assert studio["held_out_mean"] == pytest.approx(0.26) and studio["held_out_sd"] == pytest.approx(0.01)
    assert peer["held_out_runs"] == 2 and peer["held_out_sd"] == pytest.approx(0.1 / 2**0.5)
    assert peer["loss_mean_minus_studio"] == pytest.approx(-0.01)
    assert peer["loss_difference_se"] == pytest.approx((0.005 / 2 + 0.0001 / 3) ** 0.5)
    assert table["trl-cli"]["held_out_mean"] is None and "loss_difference_se" not in table["trl-cli"]
