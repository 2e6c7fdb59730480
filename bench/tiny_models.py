"""Tiny random base models of each decoder family the studio trains, built locally (no hub): the memory estimate is
checked against real training on each (bench/memory_estimate.py, tests/jobs/models/test_memory_architectures.py).

Every family gets the same small shape (hidden 256, MLP 512, 2 layers, 4 heads of 64, 2 KV heads: every Linear
dimension a multiple of 64, so bitsandbytes' CPU 4-bit kernels take them) and the demo model's tokenizer and chat
template, so one dataset trains them all. Where the families differ is what the estimate must read from their
config and headers: Qwen2's q/k/v biases and tied embeddings, Phi-3's fused qkv_proj and gate_up_proj, Gemma 2's four
norms per layer, its eager attention with soft-capping and its tied embeddings, Mistral's sliding window."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096, "initializer_range": 0.05}
ARCHITECTURES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"tie_word_embeddings": False, "sliding_window": 4096}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"tie_word_embeddings": False}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"tie_word_embeddings": True, "query_pre_attn_scalar": 64,
                                                     "sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh"}),
}
"""family: (config class, model class, what differs from SHAPE)."""


def build_tiny(architecture: str, out_dir: Path, seed: int = 0) -> Path:
    """A random `architecture` model with the demo's tokenizer, saved as safetensors into `out_dir` (reused when
    it is complete already)."""
    import torch
    import transformers

    from jobs.models.demo import VOCAB_MULTIPLE

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    config_class, model_class, extra = ARCHITECTURES[architecture]
    tokenizer = _tokenizer()
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config = getattr(transformers, config_class)(
        vocab_size=vocab, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **SHAPE, **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@cache
def _tokenizer():
    """The demo's tokenizer (trained on the example chats, deterministic), trained once per process."""
    from jobs.models.demo import train_tokenizer
    from jobs.studio import EXAMPLE_DATASET_FILE

    return train_tokenizer(Path(EXAMPLE_DATASET_FILE))
