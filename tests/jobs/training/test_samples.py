"""The sample answers (SampleCallback): one left-padded generate for all prompts gives each prompt the greedy
answer it gets alone (fp32 compute, prompts of different lengths, a real 4-bit base with a trained-looking LoRA),
and the trainer's tokenizer keeps its padding side."""

import pytest
import torch

from jobs.data.example_data import generate_examples
from jobs.models.loading import load_base_model, load_tokenizer
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import parse_spec
from jobs.training.callbacks import SAMPLE_NEW_TOKENS, SampleCallback
from jobs.training.prepare import attach_lora

pytestmark = pytest.mark.slow


def _alone(model, tokenizer, messages) -> str:
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    output = model.generate(**inputs, max_new_tokens=SAMPLE_NEW_TOKENS, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_one_batched_generate_gives_each_prompt_its_own_answer(demo_model_dir):
    spec = parse_spec({"learning_rate": 1e-3, "batch_size": 1, "num_epochs": 1, "packing": True})
    tokenizer = load_tokenizer(str(demo_model_dir))
    model = attach_lora(load_base_model(spec, str(demo_model_dir), "cpu", torch.float32),
                        resolve(spec, Base(), Machine("cpu", bf16=False)))
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero: give the LoRA an effect, so the rows are not the base's answers
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    prompts = [row["messages"][:-1] for row in generate_examples(40, seed=5)]
    prompts = sorted(prompts, key=lambda m: len(str(m)))[::13][:3]  # short, middling and long: real left padding
    lengths = {len(tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)["input_ids"])
               for m in prompts}
    assert len(lengths) == 3
    answers = []
    tokenizer.padding_side = "right"
    SampleCallback(prompts, tokenizer, lambda step, got: answers.extend(got))._answer(model, 7)
    assert tokenizer.padding_side == "right"
    model.eval()
    with torch.no_grad():
        assert [answer for _, answer in answers] == [_alone(model, tokenizer, m) for m in prompts]
    assert [prompt for prompt, _ in answers] == [m[-1]["content"] for m in prompts]
