"""What loading a quantized base leaves resident: the mapped checkpoint file is let go, the weights unchanged."""

from __future__ import annotations

import gc

import torch

from jobs.models.loading import keep_4bit_layout, release_loading_memory
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import parse_spec
from jobs.training.prepare import load_base


def _settings(quantization: str = "nf4"):
    spec = parse_spec({"quantization": quantization, "double_quant": quantization == "nf4", "batch_size": 1,
                       "packing": True, "num_epochs": 1, "learning_rate": 1e-3})
    return resolve(spec, Base(), Machine("cpu", bf16=False))


def _maps(model_dir) -> int:
    """How many regions of this process map a .safetensors file of `model_dir` (other tests of this process may hold
    models of the same file: the counts before and after a load are compared, not zero)."""
    with open("/proc/self/maps") as maps:
        return sum(str(model_dir) in line and line.rstrip().endswith(".safetensors") for line in maps)


def test_a_cpu_run_of_a_quantized_base_lets_the_checkpoint_file_go_with_the_same_weights(demo_model_dir):
    settings = _settings()
    assert settings.releases_checkpoint and not _settings("none").releases_checkpoint  # fp32 from the file: keep it
    gc.collect()
    before = _maps(demo_model_dir)
    model = load_base(settings, str(demo_model_dir))
    assert _maps(demo_model_dir) == before, "the checkpoint file is still mapped after loading"
    # The same weights as a load that keeps the file mapped: copied, not changed.
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    mapped = AutoModelForCausalLM.from_pretrained(
        str(demo_model_dir), quantization_config=BitsAndBytesConfig(**settings.quantization_kwargs()),
        dtype=torch.float32, device_map={"": "cpu"}, use_safetensors=True)
    assert _maps(demo_model_dir) > before  # what transformers leaves: the embeddings are views into the file
    keep_4bit_layout(mapped)  # as load_base does: compared in one kernel (bitsandbytes' AVX512-BF16 one is bf16)
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, mapped(ids).logits)
    assert release_loading_memory(mapped) > 0 and _maps(demo_model_dir) == before  # the bytes it copied out
