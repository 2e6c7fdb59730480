"""LoRA variants and inits through PEFT (jobs.training.lora_init), and NEFTune: one short real run on the demo base
with PiSSA + LoRA+ (8-bit AdamW) + NEFTune, checkpointed and resumed, and what each option changes."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.lora_init import LORA_START
from jobs.training.train import prepare_run, train

pytestmark = pytest.mark.slow
LR, RATIO, ALPHA = 1e-3, 16.0, 5.0
PISSA = {"quantization": "none", "double_quant": False, "init_lora_weights": "pissa", "lora_r": 4, "lora_alpha": 8,
         "target_modules": "attention", "loraplus_lr_ratio": RATIO, "optimizer": "adamw_8bit",
         "neftune_noise_alpha": ALPHA, "learning_rate": LR, "max_steps": 2, "save_steps": 1, "batch_size": 2,
         "max_length": 64, "eval_fraction": 0, "sample_prompts": 0, "logging_steps": 1, "packing": False,
         "num_epochs": 1}


@pytest.fixture(scope="module")
def pissa_run(tmp_path_factory, demo_model_dir):
    """Two steps, a checkpoint after each, the adapter registered converted."""
    data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("pissa")
    result = train(parse_spec(PISSA), out, str(demo_model_dir), data, lambda *a: None, lambda: False)
    return out, data, result.adapter_dir


def _base(demo_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(demo_model_dir), dtype=torch.float32, device_map={"": "cpu"})


def test_a_pissa_start_is_the_bases_principal_part(pissa_run, demo_model_dir):
    out, _, _ = pissa_run
    start = load_file(out / LORA_START / "adapter_model.safetensors")
    weights = load_file(demo_model_dir / "model.safetensors")
    scaling = PISSA["lora_alpha"] / PISSA["lora_r"]
    for layer in ("q_proj", "v_proj"):
        prefix = f"base_model.model.model.layers.0.self_attn.{layer}"
        product = scaling * start[f"{prefix}.lora_B.weight"] @ start[f"{prefix}.lora_A.weight"]
        u, s, vh = torch.linalg.svd(weights[f"model.layers.0.self_attn.{layer}.weight"].float(), full_matrices=False)
        principal = u[:, :4] @ torch.diag(s[:4]) @ vh[:4]
        assert torch.allclose(product, principal, atol=1e-4), (product - principal).abs().max()


def test_the_registered_adapter_applies_to_the_original_base_as_trained(pissa_run, demo_model_dir, tmp_path):
    from peft import PeftModel, set_peft_model_state_dict

    from jobs.training.merge import merge_adapter
    from jobs.training.prepare import attach_lora

    out, _, adapter_dir = pissa_run
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    # PEFT's conversion: a plain LoRA of twice the rank (alpha doubled with it), no PiSSA left to redo at load.
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["init_lora_weights"] is True
    ids = torch.tensor([[1, 5, 9, 33, 70, 2, 14, 90, 41, 7]])
    # The trained model: the residual base (the start taken out again, as a resume does) with the last checkpoint.
    settings = resolve(parse_spec(PISSA), Base(), Machine("cpu", bf16=False))
    trained = attach_lora(_base(demo_model_dir), settings, out_dir=tmp_path, base_model=str(demo_model_dir))
    set_peft_model_state_dict(trained, load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"))
    converted = PeftModel.from_pretrained(_base(demo_model_dir), str(adapter_dir))
    with torch.no_grad():
        want, got = trained.eval()(ids).logits, converted.eval()(ids).logits
        untrained = _base(demo_model_dir)(ids).logits
    assert (want - untrained).abs().max() > 1e-3  # training moved it, so the match below means something
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    merged = merge_adapter(str(demo_model_dir), adapter_dir, tmp_path / "merged", "float32")
    with torch.no_grad():
        from transformers import AutoModelForCausalLM

        folded = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)(ids).logits
    assert torch.allclose(folded, want, atol=1e-4)
    # The chat engine loads it beside the base, on the unquantized base it trained against (its spec's variant).
    from jobs.chat.engine import ChatEngine

    prompt, answer = [{"role": "user", "content": "Say something."}], "Something."
    adapter_loglik, base_loglik = ChatEngine(demo_model_dir.parent).reference_logliks(
        demo_model_dir.name, [("pissa", adapter_dir), ("base", None)], prompt, answer, 256)
    assert adapter_loglik != base_loglik


def test_a_converted_adapter_is_continued_as_init_adapter(pissa_run, demo_model_dir, tmp_path):
    _, data, adapter_dir = pissa_run
    spec = parse_spec({**PISSA, "init_lora_weights": "default", "init_adapter": "pissa-adapter", "max_steps": 1,
                       "loraplus_lr_ratio": None, "neftune_noise_alpha": None, "optimizer": "adamw_torch"})
    result = train(spec, tmp_path, str(demo_model_dir), data, lambda *a: None, lambda: False,
                   init_adapter=adapter_dir)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True and not (tmp_path / LORA_START).exists()


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


class Watch(TrainerCallback):
    """A TrainerCallback that looks at the optimizer the resumed run restored, and at the input embeddings' output
    after NEFTune's hook (registered at train start, before on_train_begin) in train and eval mode."""

    def __init__(self, checkpoint):
        self.checkpoint, self.groups, self.restored, self.noise = checkpoint, [], None, []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        saved = torch.load(self.checkpoint / "optimizer.pt", weights_only=False)
        mine = optimizer.state_dict()
        # bitsandbytes keeps its 8-bit states and their scales in a nested dict per parameter.
        self.restored = bool(saved["state"]) and same(saved["state"], mine["state"])
        self.groups = [(group["initial_lr"], len(group["params"])) for group in optimizer.param_groups]
        self.optimizer = optimizer.optimizer  # accelerate's wrapper around the optimizer the Trainer built
        embeddings = model.get_input_embeddings()

        def record(module, inputs, output):
            clean = torch.nn.functional.embedding(inputs[0], module.weight)
            self.noise.append((module.training, (output - clean).abs().max().item(), output.shape))

        embeddings.register_forward_hook(record)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 5, 9, 33]]))
        model.train()


def test_a_resumed_run_keeps_lora_plus_and_neftune(pissa_run, demo_model_dir):
    import bitsandbytes

    out, data, _ = pissa_run
    spec = parse_spec({**PISSA, "max_steps": 3})
    run = prepare_run(spec, out, str(demo_model_dir), data, lambda *a: None, lambda: False)
    watch = Watch(out / "checkpoints" / "checkpoint-2")
    run.trainer.add_callback(watch)
    run.trainer.train(resume_from_checkpoint=str(out / "checkpoints" / "checkpoint-2"))
    assert run.trainer.state.global_step == 3
    # LoRA+: A at the learning rate, B at ratio times it, in the spec's 8-bit AdamW, its states restored.
    assert isinstance(watch.optimizer, bitsandbytes.optim.AdamW) and watch.optimizer.args.optim_bits == 8
    used = {lr for lr, count in watch.groups if count}
    assert used == {LR, LR * RATIO} and watch.restored
    # NEFTune: noise in the training forward, within alpha / sqrt(tokens × width); none in eval.
    trained = [(noise, shape) for training, noise, shape in watch.noise if training]
    evaluated = [noise for training, noise, _ in watch.noise if not training]
    assert trained and all(0 < noise <= ALPHA / (shape[1] * shape[2]) ** 0.5 for noise, shape in trained)
    assert evaluated and all(noise == 0 for noise in evaluated)
