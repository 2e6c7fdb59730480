"""An evaluation's panes share one resident base (jobs.evaluate.resident): the reward-pair scoring and the lm-eval
harness path load the base once for N adapters, and each pane's scores equal its adapter's on a base of its own.

The adapters are PEFT's own random init (init_lora_weights=False, B scaled up so each moves the tiny demo base's
outputs), not trained: what is tested is which weights compute, not what training learned. Base loads are counted
by wrapping the loading function (a spy that still loads): the number of loads is not observable otherwise."""

import pytest
import torch

from jobs.chat.request import BaseVariant, Pane

pytestmark = pytest.mark.slow
PAIRS = [{"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "hi"}],
          "rejected": [{"role": "assistant", "content": "no"}]},
         {"prompt": [{"role": "user", "content": "Name a colour"}],
          "chosen": [{"role": "assistant", "content": "blue"}], "rejected": [{"role": "assistant", "content": "7"}]}]


def _adapter(auto, base_dir, out, seed: int, task_type: str, **extra):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(auto.from_pretrained(base_dir, dtype=torch.float32, **extra), LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type=task_type))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.mul_(20)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return Pane(out.name, out, BaseVariant())


def _counting(monkeypatch, module, name: str) -> list:
    calls, real = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_reward_adapters_share_one_base_and_score_as_if_loaded_alone(demo_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from jobs.evaluate.reward_pairs import pair_scores, reward_bases
    from jobs.training import prepare

    panes = [_adapter(AutoModelForSequenceClassification, demo_model_dir, tmp_path / f"rm{seed}", seed, "SEQ_CLS",
                      num_labels=1) for seed in (1, 2)]
    loads = _counting(monkeypatch, prepare, "load_base")
    bases = reward_bases(str(demo_model_dir))
    shared = [pair_scores(bases, pane, PAIRS, 64, lambda: False) for pane in panes]
    assert len(loads) == 1
    alone = [pair_scores(reward_bases(str(demo_model_dir)), pane, PAIRS, 64, lambda: False) for pane in panes]
    assert len(loads) == 3
    assert shared[0] != shared[1]  # the second adapter, not the first, scored the second time
    flat = [[score for pair in scores for score in pair] for scores in (shared, alone)]
    assert flat[0] == pytest.approx(flat[1], abs=1e-5)


def test_benchmark_panes_share_one_base_and_compute_as_if_loaded_alone(demo_model_dir, tmp_path, monkeypatch):
    """lm_eval's scores are a function of the model's logits: `run_pane` is swapped for the logits of a fixed input
    (running lm_eval's tasks would cost seconds a pane and say no more about which weights computed)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from jobs.evaluate import harness
    from jobs.models import loading

    panes = [_adapter(AutoModelForCausalLM, demo_model_dir, tmp_path / f"lora{seed}", seed, "CAUSAL_LM")
             for seed in (1, 2)] + [Pane("base", None, BaseVariant())]
    ids = torch.tensor([[1, 5, 9, 14, 3]])

    def logits(model, *_args):
        return {"logits": model(input_ids=ids).logits.clone()}, {}

    monkeypatch.setattr(harness, "run_pane", logits)
    loads = _counting(monkeypatch, loading, "load_base_model")
    table, _ = harness.benchmark(panes, "demo", str(demo_model_dir), ["t"], tmp_path, 1, None, 0, lambda: False,
                                 lambda done: None)
    assert len(loads) == 1
    for pane in panes:
        model = loading.load_base_model(BaseVariant().spec("demo"), str(demo_model_dir), "cpu", torch.float32)
        if pane.adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(pane.adapter_dir), is_trainable=False)
        with torch.inference_mode():
            alone = model.eval()(input_ids=ids).logits
        torch.testing.assert_close(table[pane.name]["logits"], alone)
    assert not torch.allclose(table[panes[0].name]["logits"], table[panes[1].name]["logits"])
