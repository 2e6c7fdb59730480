"""Real 4-bit NF4 QLoRA training on CPU with the tiny demo model (bitsandbytes >= 0.50 runs it for real)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.callbacks import CANCEL
from jobs.training.checkpoints import newest_complete_checkpoint
from jobs.training.lm_head import scores_only_labelled_positions
from jobs.training.train import train

pytestmark = pytest.mark.slow
FAST = {"max_steps": 4, "batch_size": 2, "max_length": 256, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
        "eval_fraction": 0.05}


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    path, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    return path


def test_train_writes_peft_adapter_and_streams_metrics(tmp_path, demo_model_dir, example_data):
    seen = []
    result = train(parse_spec(FAST), tmp_path, str(demo_model_dir), example_data,
                   lambda step, values, total: seen.append((step, values, total)), lambda: False)
    assert not result.stopped
    names = {name for _, values, _ in seen for name in values}
    assert {"loss", "learning_rate", "grad_norm", "eval_loss", "tokens_per_s"} <= names
    assert all(total == 4 for _, _, total in seen)
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_spec.json",
            "final_metrics.json", "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    leaf_names = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert config["r"] == 8 and leaf_names >= {"q_proj", "down_proj"}
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any("lora_A" in key for key in weights) and all(w.dtype.is_floating_point for w in weights.values())
    assert result.final_metrics["steps"] == 4 and "eval_loss" in result.final_metrics
    assert not (tmp_path / "adapter.partial").exists()
    assert scores_only_labelled_positions(torch.device("cpu"))  # the CPU run projected only labelled positions


def test_stop_saves_a_checkpoint_and_the_next_attempt_resumes(tmp_path, demo_model_dir, example_data):
    spec = parse_spec({**FAST, "max_steps": 6, "save_steps": 100, "eval_fraction": 0})
    steps = []
    stopped = train(spec, tmp_path, str(demo_model_dir), example_data,
                    lambda step, values, total: steps.append(step), lambda: bool(steps) and steps[-1] >= 2)
    assert stopped.stopped and stopped.adapter_dir is None
    checkpoint = newest_complete_checkpoint(tmp_path / "checkpoints")
    # step 2 is logged after that step's stop check, so the run stops (and checkpoints) after step 3
    assert checkpoint is not None and checkpoint.name == "checkpoint-3"

    resumed_steps = []
    done = train(spec, tmp_path, str(demo_model_dir), example_data,
                 lambda step, values, total: resumed_steps.append(step), lambda: False)
    assert not done.stopped and done.final_metrics["steps"] == 6
    assert min(resumed_steps) > 3  # it continued from the checkpoint instead of starting over


def test_a_cancel_stops_inside_an_eval_and_keeps_nothing(tmp_path, demo_model_dir, example_data):
    spec = parse_spec({**FAST, "max_steps": 6, "sample_prompts": 2})
    steps, evals, samples = [], [], {}

    def sink(step, values, total):
        steps.append(step)
        evals.extend(step for name in values if name == "eval_loss")

    # Step 2 is logged after its stop check and before its eval and checkpoint: the cancel comes between them.
    result = train(spec, tmp_path, str(demo_model_dir), example_data, sink,
                   lambda: CANCEL if steps and steps[-1] >= 2 else False,
                   lambda step, answers: samples.setdefault(step, answers))
    assert result.stopped and result.adapter_dir is None
    assert max(steps) == 2 and not evals  # the eval was cut between batches
    assert sorted(samples) == [0]  # no answers at the cancelled eval, none at the end
    assert newest_complete_checkpoint(tmp_path / "checkpoints") is None  # no save for a run nobody resumes


def test_a_resumed_run_ends_with_the_adapter_an_uninterrupted_run_gives(tmp_path, demo_model_dir, example_data):
    spec = parse_spec({**FAST, "max_steps": 6, "save_steps": 100, "eval_fraction": 0})
    whole, resumed = [], []
    straight = train(spec, tmp_path / "straight", str(demo_model_dir), example_data,
                     lambda step, values, total: whole.append((step, values)), lambda: False)
    train(spec, tmp_path / "resumed", str(demo_model_dir), example_data,
          lambda step, values, total: resumed.append((step, values)), lambda: bool(resumed) and resumed[-1][0] >= 2)
    again = train(spec, tmp_path / "resumed", str(demo_model_dir), example_data,
                  lambda step, values, total: resumed.append((step, values)), lambda: False)
    expected = load_file(straight.adapter_dir / "adapter_model.safetensors")
    got = load_file(again.adapter_dir / "adapter_model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)  # same seed
    for run in (whole, resumed):  # throughput of every logged step, the first after the resume included
        assert sorted({step for step, values in run if "tokens_per_s" in values}) == [1, 2, 3, 4, 5, 6]


def test_a_damaged_checkpoint_falls_back_to_the_one_before_then_to_the_start(tmp_path, demo_model_dir,
                                                                             example_data, capsys):
    spec = parse_spec({**FAST, "max_steps": 8, "save_steps": 2, "eval_fraction": 0})
    steps = []
    train(spec, tmp_path, str(demo_model_dir), example_data, lambda step, values, total: steps.append(step),
          lambda: bool(steps) and steps[-1] >= 4)  # checkpoints 2 and 4 kept (save_total_limit 2), 5 saved on stop
    checkpoints = tmp_path / "checkpoints"
    kept = sorted(p.name for p in checkpoints.glob("checkpoint-*"))
    newest, previous = checkpoints / kept[-1], checkpoints / kept[-2]
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated after it was written
    assert newest_complete_checkpoint(checkpoints) == previous
    assert "is damaged" in capsys.readouterr().out
    (previous / "trainer_state.json").unlink()  # and the one before it lost a file
    assert newest_complete_checkpoint(checkpoints) is None
    assert "starts over from step 0" in capsys.readouterr().out
    resumed = []
    done = train(spec, tmp_path, str(demo_model_dir), example_data,
                 lambda step, values, total: resumed.append(step), lambda: False)
    assert not done.stopped and min(resumed) == 1 and done.final_metrics["steps"] == 8


def test_torn_checkpoint_is_never_resumed(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "checkpoint-4").mkdir(parents=True)
    (checkpoints / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (checkpoints / "checkpoint-4" / "studio-complete.json").write_text("{}")
    (checkpoints / "checkpoint-8").mkdir()  # killed mid-save: no marker
    (checkpoints / "checkpoint-8" / "trainer_state.json").write_text("{")
    assert newest_complete_checkpoint(checkpoints).name == "checkpoint-4"


@pytest.mark.parametrize(("error", "opening"), [
    (OSError("We couldn't connect to 'https://huggingface.co' to load the files"), "Could not download the base model"),
    (OSError("x does not appear to have a file named config.json"), "Could not load the base model"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "Out of memory"),
    (ValueError("boom"), "Training failed"),
])
def test_failures_are_explained_in_words(error, opening):
    from jobs.failures import explain_failure

    text = explain_failure(error)
    assert text.startswith(opening) and str(error) in text  # the original error is kept for the curious


def test_sample_answers_are_given_at_the_start_every_eval_and_the_end(tmp_path, demo_model_dir, example_data):
    spec = parse_spec({**FAST, "max_steps": 4, "eval_steps": 2, "sample_prompts": 2})
    samples, tokens = {}, []
    train(spec, tmp_path, str(demo_model_dir), example_data,
          lambda step, values, total: tokens.append(values.get("tokens_seen")),
          lambda: False, lambda step, answers: samples.setdefault(step, answers))
    assert sorted(samples) == [0, 2, 4]  # the base before training, each eval, the end (the last eval is it)
    assert all(len(answers) == 2 and all(prompt for prompt, _ in answers) for answers in samples.values())
    assert [prompt for prompt, _ in samples[0]] == [prompt for prompt, _ in samples[4]]  # the same held-out prompts
    seen = [t for t in tokens if t is not None]
    assert seen == sorted(seen) and seen[-1] > 0  # tokens seen only grow


def test_without_an_eval_split_the_samples_answer_training_prompts_every_eval_steps(tmp_path, demo_model_dir,
                                                                                     example_data):
    from jobs.data.store import load_rows

    spec = parse_spec({**FAST, "max_steps": 5, "eval_steps": 2, "sample_prompts": 2, "eval_fraction": 0})
    samples, metrics = {}, set()
    train(spec, tmp_path, str(demo_model_dir), example_data, lambda step, values, total: metrics.update(values),
          lambda: False, lambda step, answers: samples.setdefault(step, answers))
    assert "eval_loss" not in metrics
    assert sorted(samples) == [0, 2, 4, 5]  # the base, every 2 steps, the end
    first_rows = load_rows(example_data)  # no split: the training rows in their stored order
    training_prompts = {row["messages"][-2]["content"] for row in first_rows}
    assert all(prompt in training_prompts for answers in samples.values() for prompt, _ in answers)


def test_early_stopping_registers_the_best_adapter(tmp_path, demo_model_dir, example_data):
    """A learning rate far too high makes eval loss climb after its low point: the run stops after two evals
    without improvement, and the adapter it registers is the one kept at the lowest eval loss."""
    spec = parse_spec({"max_steps": 40, "batch_size": 2, "max_length": 128, "learning_rate": 0.3, "logging_steps": 1,
                       "eval_fraction": 0.05, "eval_steps": 1, "save_steps": 100, "sample_prompts": 0,
                       "early_stopping_patience": 2})
    evals = {}

    def sink(step, values, total):
        if "eval_loss" in values:
            evals.setdefault(step, values["eval_loss"])  # the first report of a step: its eval

    result = train(spec, tmp_path / "run", str(demo_model_dir), example_data, sink, lambda: False)
    final = result.final_metrics
    assert final["steps"] < 40 and final["stopped_early_at_step"] == final["steps"]
    best_step = min(evals, key=evals.get)
    assert final["best_step"] == best_step < final["steps"]
    assert final["eval_loss"] == pytest.approx(evals[best_step]) and final["last_eval_loss"] > final["eval_loss"]
    saved = load_file(result.adapter_dir / "adapter_model.safetensors")
    kept = load_file(tmp_path / "run" / "best" / "adapter" / "adapter_model.safetensors")
    assert saved.keys() == kept.keys() and all(saved[key].equal(kept[key]) for key in kept)
    assert json.loads((result.adapter_dir / "final_metrics.json").read_text())["best_step"] == best_step


def _first_layer_grads(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {name: param.grad.clone() for name, param in model.named_parameters()
            if param.requires_grad and "layers.0." in name}


def test_an_eval_during_training_keeps_the_gradient_path_through_the_4bit_base(tmp_path, demo_model_dir,
                                                                                example_data):
    """bitsandbytes 0.50 repacks 4-bit weights for CPU inference at the first no-grad eval on an AVX512-BF16 CPU (as
    this machine and CI have) and never packs them back; training then drops the gradient through the frozen base.
    Same batch, same weights: the first layer's LoRA gradients after the trainer's eval are those before it."""
    from jobs.training.train import prepare_run

    spec = parse_spec({**FAST, "lora_dropout": 0, "sample_prompts": 0, "packing": True, "learning_rate": 1e-3})
    run = prepare_run(spec, tmp_path, str(demo_model_dir), example_data, lambda *a: None, lambda: False)
    model = run.trainer.model
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a fresh LoRA's B is zero, which would hide the path through A
            torch.nn.init.normal_(param, std=0.02)
    batch = next(iter(run.trainer.get_train_dataloader()))
    before = _first_layer_grads(model, batch)
    run.trainer.evaluate()
    after = _first_layer_grads(model, batch)
    assert before and all(torch.allclose(before[name], after[name], atol=1e-6) for name in before), max(
        float((before[name] - after[name]).abs().max()) for name in before)
