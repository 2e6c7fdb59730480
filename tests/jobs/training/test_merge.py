"""Merging folds the adapter into the base exactly: the merged folder loads with plain AutoModelForCausalLM and
answers as the adapter on its (unquantized) base does."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.spec import parse_spec
from jobs.training.merge import merge_adapter

pytestmark = pytest.mark.slow
LOGIT_TOLERANCE = 1e-4  # fp32: the merged W' = W + s·BA against W·x + s·B(A·x) differ only by float rounding


def _prompt(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "What is the opposite of hot?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)


def test_merged_model_equals_adapter_on_base(trained_adapter, demo_model_dir, tmp_path):
    merged_dir = merge_adapter(str(demo_model_dir), trained_adapter, tmp_path / "merged", "float32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # plain transformers, no peft
    base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    plain_logits = base(**_prompt(AutoTokenizer.from_pretrained(demo_model_dir))).logits
    with_adapter = PeftModel.from_pretrained(base, trained_adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    inputs = _prompt(tokenizer)
    with torch.no_grad():
        expected, got = with_adapter(**inputs).logits, merged(**inputs).logits
        greedy = [m.generate(**inputs, max_new_tokens=12, do_sample=False) for m in (with_adapter, merged)]
    assert (expected - plain_logits).abs().max() > 1e-3  # the adapter changes the answers: the check can fail
    assert (expected - got).abs().max() < LOGIT_TOLERANCE
    assert torch.equal(greedy[0], greedy[1])
    assert {"README.md", "training_spec.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in merged_dir.iterdir()}


VARIANTS = {
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True, "r": 4},
    "modules_to_save": {"modules_to_save": ["lm_head"], "target_modules": ["q_proj", "v_proj"]},
    "embeddings": {"target_modules": ["embed_tokens", "o_proj"]},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_adapter_variant_merges_into_what_it_answers_on_its_base(variant, demo_model_dir, tmp_path):
    """DoRA (magnitudes), rsLoRA (alpha/sqrt(r)), fully trained modules and LoRA on the embeddings each merge through
    PEFT's merge_and_unload: the merged model answers as the adapter on its base. The adapter is PEFT's own random
    init (init_lora_weights=False: B is not zero, so the adapter changes the answers), not trained: merging does not
    care how the weights were found."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    fields = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", **VARIANTS[variant]}
    base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **fields))
    for name, param in model.named_parameters():  # a fully trained head moves away from the base's
        if "modules_to_save" in name:
            param.data.add_(0.05 * torch.randn_like(param))
    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(adapter_dir)
    AutoTokenizer.from_pretrained(demo_model_dir).save_pretrained(adapter_dir)
    (adapter_dir / "training_spec.json").write_text(parse_spec({}).model_dump_json())
    merged = AutoModelForCausalLM.from_pretrained(
        merge_adapter(str(demo_model_dir), adapter_dir, tmp_path / "merged", "float32"))
    inputs = _prompt(AutoTokenizer.from_pretrained(demo_model_dir))
    plain = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
        assert (expected - plain(**inputs).logits).abs().max() > 1e-3
        assert (expected - merged(**inputs).logits).abs().max() < LOGIT_TOLERANCE
