"""LoRA variants and inits, and NEFTune, from the spec to what the libraries get: the settings, the refusals where PEFT
cannot do a start, the optimizer LoRA+ wraps, the memory a start needs, and LoftQ's path (CUDA only)."""

import pytest
import torch

from jobs.failures import explain_failure
from jobs.models.memory import estimate
from jobs.models.memory_inputs import ModelShape, TrainShape
from jobs.run_settings.lora import LoraSettings
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import SpecError, parse_spec

CPU = Machine("cpu", bf16=False)
UNQUANTIZED = {"quantization": "none", "double_quant": False}


def _problems(raw: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    return {p.field: p.message for p in caught.value.problems}


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"init_lora_weights": "pissa"}, "quantization", "init_lora_weights 'pissa' needs quantization 'none'"),
    ({"init_lora_weights": "olora", "quantization": "int8", "double_quant": False}, "quantization",
     "Set quantization to 'none'"),
    ({"init_lora_weights": "loftq", **UNQUANTIZED}, "quantization", "Set quantization to 'nf4'"),
    ({"init_lora_weights": "pissa", **UNQUANTIZED, "use_dora": True}, "init_lora_weights", "turn use_dora off"),
    ({"init_lora_weights": "olora", **UNQUANTIZED, "modules_to_save": ["lm_head"]}, "init_lora_weights",
     "modules_to_save ['lm_head'] would be lost"),
    ({"init_lora_weights": "pissa", **UNQUANTIZED, "lora_bias": "all"}, "init_lora_weights", "lora_bias 'all'"),
    ({"init_lora_weights": "pissa", **UNQUANTIZED, "target_modules": "embeddings"}, "init_lora_weights",
     "leave embed_tokens out"),
    ({"init_lora_weights": "pissa", **UNQUANTIZED, "method": "dpo"}, "init_lora_weights", "continue it with dpo"),
    ({"init_lora_weights": "olora", **UNQUANTIZED, "method": "kto"}, "init_lora_weights", "continue it with kto"),
    ({"init_lora_weights": "gaussian", "init_adapter": "mine"}, "init_lora_weights", "leave init_adapter empty"),
    ({"pissa_niter": 4}, "pissa_niter", "applies only to init_lora_weights 'pissa'"),
    ({"loraplus_lr_ratio": 0.5}, "loraplus_lr_ratio", "from 1 to 1024"),
    ({"neftune_noise_alpha": 0}, "neftune_noise_alpha", "greater than 0"),
])
def test_starts_and_variants_peft_cannot_do_are_refused_in_words(raw, field, words):
    assert words in _problems(raw)[field]


def test_the_settings_carry_the_options_to_peft_and_the_trainer():
    spec = parse_spec({"init_lora_weights": "pissa", "pissa_niter": 4, **UNQUANTIZED, "loraplus_lr_ratio": 16,
                       "neftune_noise_alpha": 5, "batch_size": 2, "packing": True, "learning_rate": 1e-3,
                       "num_epochs": 1})
    settings = resolve(spec, Base(), CPU)
    assert settings.lora.peft_kwargs()["init_lora_weights"] == "pissa_niter_4" and settings.lora.converted
    assert settings.trainer_kwargs()["neftune_noise_alpha"] == 5 and settings.loraplus_lr_ratio == 16
    # LoftQ's start comes after the LoRA is built; PEFT builds it with its default init.
    loftq = resolve(parse_spec({"init_lora_weights": "loftq"}), Base(), CPU).lora
    assert loftq.loftq and loftq.peft_kwargs()["init_lora_weights"] is True
    # A converted adapter's config (PEFT writes True) continues as a plain LoRA.
    assert LoraSettings.from_adapter_config({"r": 8, "init_lora_weights": True}).init == "default"


def test_lora_plus_wraps_the_optimizer_the_spec_chose():
    from trl import SFTConfig

    from jobs.training.lora_init import LoraPlus, loraplus_optimizer

    for optimizer, expected in (("adamw_torch", torch.optim.AdamW), ("adamw_8bit", None)):
        spec = parse_spec({"loraplus_lr_ratio": 8, "optimizer": optimizer, "weight_decay": 0.01})
        settings = resolve(spec, Base(), CPU)
        args = SFTConfig(output_dir="unused", optim=settings.optimizer, learning_rate=2e-4, weight_decay=0.01,
                         use_cpu=True, report_to="none")
        factory, kwargs = loraplus_optimizer(settings, args)
        assert factory is LoraPlus and kwargs["loraplus_lr_ratio"] == 8 and kwargs["lr"] == 2e-4
        assert kwargs["loraplus_weight_decay"] == 0.01
        if expected is None:
            assert "bitsandbytes" in kwargs["optimizer_cls"].__module__ and kwargs["optim_bits"] == 8
        else:
            assert kwargs["optimizer_cls"] is expected
    assert loraplus_optimizer(resolve(parse_spec({}), Base(), CPU), args) is None


def test_a_start_that_decomposes_weights_raises_the_load_peak_lora_plus_does_not():
    shape = ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000,
                       tied_embeddings=False)
    plain = estimate(shape, TrainShape(quantization="none", double_quant=False))
    pissa = estimate(shape, TrainShape(quantization="none", double_quant=False, lora_init="pissa"))
    fast = estimate(shape, TrainShape(quantization="none", double_quant=False, lora_init="pissa_niter_4"))
    largest = 4096 * 11008 * 4  # the MLP's weights, in fp32
    assert pissa.load_peak - plain.load_peak == 4 * largest and fast.load_peak - plain.load_peak == 2 * largest
    settings = resolve(parse_spec({"loraplus_lr_ratio": 16, "batch_size": 2}), Base(), CPU)
    assert TrainShape.from_settings(settings) == TrainShape.from_settings(
        resolve(parse_spec({"batch_size": 2}), Base(), CPU))


def test_loftq_is_refused_on_a_cpu_in_words(studio):
    from jobs.submit import submit_job
    from jobs.training.lora_init import LoraInitError, start_adapter

    # At submit: no worker has registered and this machine is a CPU.
    with pytest.raises(SpecError) as caught:
        submit_job(studio, {"init_lora_weights": "loftq"})
    assert "needs a CUDA worker" in str(caught.value)
    # In the job: a CPU worker refuses before anything trains, and the job's error says so.
    settings = resolve(parse_spec({"init_lora_weights": "loftq"}), Base(), CPU)
    with pytest.raises(LoraInitError) as error:
        start_adapter(None, settings, studio.settings.data_dir, "base")
    assert explain_failure(error.value).startswith("init_lora_weights 'loftq' needs a CUDA worker")


def test_loftq_start_fits_the_4bit_quantization_error(demo_model_dir, monkeypatch):
    """PEFT's replace_lora_weights_loftq on the demo's NF4 base. Its decomposition computes on 'cuda' whatever the
    model's device (it cannot run here): the same function with its device set to the CPU stands in for it."""
    import peft.utils.loftq_utils as loftq_utils
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from jobs.training.lora_init import loftq_start
    from jobs.training.prepare import lora_config

    def on_cpu(qweight, weight, num_bits, reduced_rank):
        import bitsandbytes

        residual = weight.float() - bitsandbytes.functional.dequantize_4bit(qweight.data, qweight.quant_state)
        factors = loftq_utils._low_rank_decomposition(residual, reduced_rank=reduced_rank)
        return factors["R"], factors["L"]

    monkeypatch.setattr(loftq_utils, "_loftq_init_new", on_cpu)
    spec = parse_spec({"init_lora_weights": "loftq", "lora_r": 8, "lora_alpha": 32, "target_modules": "attention"})
    settings = resolve(spec, Base(), CPU)
    base = AutoModelForCausalLM.from_pretrained(
        str(demo_model_dir), quantization_config=BitsAndBytesConfig(**settings.quantization_kwargs()),
        dtype=torch.float32, device_map={"": "cpu"})
    model = get_peft_model(base, lora_config(settings))
    loftq_start(model, str(demo_model_dir))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    original = load_file(demo_model_dir / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"].float()
    import bitsandbytes

    quantized = bitsandbytes.functional.dequantize_4bit(layer.base_layer.weight.data,
                                                        layer.base_layer.weight.quant_state)
    started = quantized + layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    # Scaled right (alpha / r = 4 here): closer to the full-precision weight than the 4-bit one alone.
    assert (original - started).norm() < 0.95 * (original - quantized).norm()
