"""Each training option the spec offers trains a few real NF4 steps on CPU, and the adapter records it."""

import json
import re

import pytest
from transformers import AutoTokenizer

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.run_settings.settings import optimizer_for
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.adapter import save_adapter
from jobs.training.train import train

pytestmark = pytest.mark.slow
FEW_STEPS = {"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0, "logging_steps": 1,
             "save_steps": 100}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    return path


@pytest.mark.parametrize("options", [
    {"use_dora": True}, {"use_rslora": True}, {"lora_bias": "lora_only"}, {"modules_to_save": ["lm_head"]},
    {"optimizer": "adamw_8bit"}, {"optimizer": "paged_adamw_8bit"}, {"optimizer": "paged_adamw_32bit"},
    {"lr_scheduler": "linear", "weight_decay": 0.01, "max_grad_norm": 0.5},
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
def test_option_trains_and_is_recorded(options, dataset, demo_model_dir, tmp_path):
    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", **options})
    losses = []
    result = train(spec, tmp_path, str(demo_model_dir), dataset,
                   lambda step, values, total: losses.append(values.get("loss")), lambda: False)
    assert not result.stopped and [loss for loss in losses if loss is not None]
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["use_dora"] == spec.use_dora and config["use_rslora"] == spec.use_rslora
    assert config["bias"] == spec.lora_bias and (config["modules_to_save"] or []) == spec.modules_to_save
    assert json.loads((result.adapter_dir / "training_spec.json").read_text())["optimizer"] == spec.optimizer


def test_paged_optimizers_run_unpaged_on_cpu_and_say_so():
    ran, note = optimizer_for(parse_spec({"optimizer": "paged_adamw_8bit"}), "cpu")
    assert ran == "adamw_bnb_8bit" and "needs CUDA" in note
    assert optimizer_for(parse_spec({"optimizer": "paged_adamw_8bit"}), "cuda") == ("paged_adamw_8bit", None)
    assert optimizer_for(parse_spec({}), "cpu") == ("adamw_torch", None)


def test_tracking_attention_and_rope_change_the_run(dataset, demo_model_dir, tmp_path):
    """One short run with TensorBoard, eager attention, linear RoPE x2 and torch.compile asked for: the loss lands in
    TensorBoard's event files in the run folder, the model attends eagerly with its rotary frequencies halved, and
    torch.compile is dropped in words (the tests switch TorchDynamo off: compiling would be a silent no-op)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jobs.training.train import prepare_run

    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", "report_to": "tensorboard",
                       "attn_implementation": "eager", "rope_scaling": "linear", "rope_factor": 2,
                       "torch_compile": True})
    run = prepare_run(spec, tmp_path, str(demo_model_dir), dataset, lambda *_: None, lambda: False)
    model = run.trainer.model
    assert model.config._attn_implementation == "eager"
    assert model.config.rope_parameters["rope_type"] == "linear"
    rotary = model.base_model.model.model.rotary_emb
    assert rotary.inv_freq[0].item() == pytest.approx(0.5)  # 1 / 10000^0 divided by the factor
    assert not run.settings.torch_compile and any("TORCHDYNAMO_DISABLE" in note for note in run.settings.notes)
    run.trainer.train()
    events = EventAccumulator(str(tmp_path / "tracking" / "tensorboard"))
    events.Reload()
    losses = [event.value for event in events.Scalars("train/loss")]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_a_mixed_run_takes_rows_by_ratio_and_trains_only_the_last_turn(dataset, demo_model_dir, tmp_path, capsys):
    """The Data options together, on one real run: two datasets mixed 50/50 within 12 rows, a pasted template with
    its own framing, a default system prompt, loss on the last assistant turn only; the adapter keeps the template."""
    from jobs.chat.generation import LoadedBase
    from jobs.chat.request import ChatFormat, chat_format
    from jobs.data.formats import ParsedDataset
    from jobs.models.loading import load_tokenizer
    from jobs.training.train import prepare_run
    from tests.jobs.models.test_templates import CUSTOM_TEMPLATE, TWO_TURNS, masked_pieces

    chats = [{"messages": [{**m, "content": f"{m['content']} {i}"} for m in TWO_TURNS]} for i in range(5)]
    multi, _ = store_parsed(ParsedDataset("messages", chats), tmp_path / "data")
    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", "packing": False, "max_steps": 1,
                       "dataset_mix": "example:0.5, multi:0.5", "max_rows": 12, "chat_template": CUSTOM_TEMPLATE,
                       "system_prompt": "Be brief.", "loss_turns": "last", "sample_prompts": 0})
    files = {"example": dataset, "multi": multi}
    run = prepare_run(spec, tmp_path / "run", str(demo_model_dir), files, lambda *a: None, lambda: False)
    # 6 + 5: the small dataset is taken whole (capped, never repeated), and the log says so.
    log = capsys.readouterr().out
    assert "mixed 11 rows: 6 of 600 rows from 'example'; 5 of 5 rows from 'multi' (all of it" in log
    tokenizer, rows = run.tokenizer, run.trainer.train_dataset
    texts = [tokenizer.decode(row["input_ids"]).replace(" ", "") for row in rows]
    # Rows without a system message get the default one (some example rows have their own and keep it).
    assert len(rows) == 11 and all(text.startswith("SYSTEM:") for text in texts)
    multi_rows = [(row, re.search(r"and4(\d)<", text)[1]) for row, text in zip(rows, texts, strict=True)
                  if "and4" in text]
    assert len(multi_rows) == 5 and all(text.startswith("SYSTEM:Bebrief.<|end|>USER:add") for text in texts
                                        if "and4" in text)
    for row, number in multi_rows:  # only the last answer and its end carry loss: the first answer is context
        keep = [int(label != -100) for label in row["labels"]]
        assert masked_pieces(tokenizer, row["input_ids"], keep) == [f"9{number}<|end|>"]
    run.trainer.train()
    adapter = save_adapter(run.trainer.model, tokenizer, run.spec, {}, tmp_path / "run")
    assert AutoTokenizer.from_pretrained(adapter).chat_template == CUSTOM_TEMPLATE  # merge and export render alike
    # Chat writes a pane's prompt as its adapter trained: its template, its default system prompt.
    written = chat_format(adapter)
    assert written == ChatFormat(CUSTOM_TEMPLATE, "Be brief.", pasted=True)  # renders in a bounded process
    base = LoadedBase(tokenizer=load_tokenizer(str(demo_model_dir)), model=None, formats={"a": written})
    prompt = base.render("a", [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "SYSTEM: Be brief.<|end|>USER: hi<|end|>ASSISTANT<|assistant|>"


def test_a_pack_length_trains_packed_sequences_in_shorter_passes_and_cuts_no_row(dataset, demo_model_dir, tmp_path,
                                                                                capsys):
    """pack_length 64 of max_length 128: TRL packs to 64 tokens with grad accumulation doubled, every row's tokens
    arrive whole; a row longer than 64 is refused before loading anything rather than cut."""
    from jobs.data.formats import ParsedDataset
    from jobs.data.stats import tokenize_row
    from jobs.models.loading import load_tokenizer
    from jobs.training.train import prepare_run

    tokenizer = load_tokenizer(str(demo_model_dir))
    rows = parse_file(EXAMPLE_DATASET_FILE).rows
    lengths = {i: len(tokenize_row(tokenizer, row, False).ids) for i, row in enumerate(rows)}
    short = [rows[i] for i, n in lengths.items() if n <= 64][:40]
    path, _ = store_parsed(ParsedDataset("messages", short), tmp_path / "short")
    spec = parse_spec({**FEW_STEPS, "target_modules": "attention", "packing": True, "max_steps": 1, "batch_size": 1,
                       "pack_length": 64, "sample_prompts": 0})
    run = prepare_run(spec, tmp_path / "run", str(demo_model_dir), path, lambda *a: None, lambda: False)
    assert (run.trainer.args.max_length, run.trainer.args.gradient_accumulation_steps) == (64, 2)
    packed = run.trainer.train_dataset
    assert max(len(row["input_ids"]) for row in packed) <= 64
    assert sum(len(row["input_ids"]) for row in packed) == sum(len(tokenize_row(tokenizer, row, False).ids)
                                                               for row in short)
    assert "trains in 2 forward passes of 64 tokens" in capsys.readouterr().out
    run.trainer.train()
    longer = next(rows[i] for i, n in lengths.items() if 64 < n <= 128)
    path, _ = store_parsed(ParsedDataset("messages", [*short, longer]), tmp_path / "longer")
    with pytest.raises(ValueError, match="TRL would cut it"):
        prepare_run(spec, tmp_path / "run2", str(demo_model_dir), path, lambda *a: None, lambda: False)
