"""A base model's shape as far as training memory is concerned, for any decoder the studio loads: read from its
config.json and, when the weights are here, from their safetensors headers (names and shapes; no weight is read).

Families name and fuse their layers differently (Phi-3 has one qkv_proj and one gate_up_proj where Llama has q/k/v
and gate/up; Qwen2 puts biases on q/k/v; Gemma 2 has four norms per layer and soft-caps its attention logits, so it
runs eager attention), so nothing here is a Llama table: the Linear layers, their shapes, biases and norms come from
the headers. Without weights (a studio base not prepared yet) the config alone gives them, through the layout of its
family: fused (Phi-3) or the q/k/v/o + gate/up/down layout most decoders share."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

from safetensors import safe_open

DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}
INPUT_OF = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in",
            "o_proj": "attn_out", "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in",
            "down_proj": "mlp_mid"}
"""Which tensor each Linear reads: without dropout, LoRA on Linears reading one tensor saves it once. A name not
listed reads its own."""
EMBEDDINGS = ("embed_tokens",)
OUTPUT = ("lm_head",)
FUSED_FAMILIES = ("phi3",)
"""Families whose attention is one qkv_proj and whose MLP is one gate_up_proj."""
BIASED_QKV_FAMILIES = ("qwen2", "qwen2_moe")
FOUR_NORM_FAMILIES = ("gemma2", "gemma3", "gemma3_text")
"""Norms before and after both attention and MLP."""
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Linear:
    """One kind of Linear in the decoder layers, by its leaf name."""

    name: str
    d_in: int
    d_out: int
    layers: int
    """How many the decoder has: one per layer (more in a mixture of experts, one per expert)."""
    bias: bool = False

    @property
    def params(self) -> int:
        return self.layers * self.d_in * self.d_out


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only language model: dimensions, its Linear layers, norms and attention kind."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int = 0
    """0: hidden // heads."""
    checkpoint_bytes: int = 0
    """Tensor bytes in the safetensors file(s); 0 when unknown."""
    checkpoint_dtype_bytes: int = 4
    """Bytes per weight as stored (4 for F32, 2 for BF16/F16)."""
    model_type: str = "llama"
    linears: tuple[Linear, ...] = ()
    """The decoder's Linear layers as the headers name them; empty: the family's layout from the config."""
    norms_per_layer: int = 0
    """Hidden-wide norms in each decoder layer; 0: the family's (2, or 4 for Gemma 2 and 3)."""
    eager_attention: bool = False
    """Attention as plain matmuls + softmax (a family SDPA cannot run, such as soft-capped Gemma 2): it keeps the
    attention probabilities (heads x T x T per layer) for backward."""
    attention_softcap: bool = False
    """Eager attention that soft-caps its logits keeps the tanh's output too (another heads x T x T)."""
    mask_kinds: int = 1
    """Distinct attention masks the model builds per forward (2 where full and sliding-window layers alternate)."""
    other_params: int = -1
    """Parameters besides the decoder Linears, embeddings and LM head (norms, biases), from the headers; -1: from
    the config (the norms)."""

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.dim_per_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim_per_head

    @property
    def decoder_linears(self) -> tuple[Linear, ...]:
        return self.linears or family_layout(self)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each Linear in one decoder layer, by leaf name."""
        return {linear.name: (linear.d_in, linear.d_out) for linear in self.decoder_linears}

    def linear(self, name: str) -> Linear | None:
        """The decoder Linear named `name` (a leaf name, or a dotted path ending in one), or None."""
        leaf = name.rsplit(".", 1)[-1]
        return next((linear for linear in self.decoder_linears if linear.name == leaf), None)

    @property
    def linear_params_per_layer(self) -> int:
        return sum(linear.d_in * linear.d_out for linear in self.decoder_linears)

    @property
    def quantized_params(self) -> int:
        """Weights bitsandbytes quantizes: every decoder Linear (never the embeddings or the LM head)."""
        return sum(linear.params for linear in self.decoder_linears)

    @property
    def layer_norms(self) -> int:
        return self.norms_per_layer or (4 if self.model_type in FOUR_NORM_FAMILIES else 2)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        """Norm weights and biases: the other parameters the headers list, or the config's norms."""
        if self.other_params >= 0:
            return self.other_params
        biases = sum(linear.layers * linear.d_out for linear in self.decoder_linears if linear.bias)
        return (self.layer_norms * self.layers + 1) * self.hidden + biases

    @property
    def unquantized_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.norm_params

    @property
    def total_params(self) -> int:
        return self.quantized_params + self.unquantized_params

    def module_params(self, name: str) -> int:
        """Parameters of the module `name` (a leaf name) in the whole model: what a full trainable copy of it holds
        (modules_to_save). 0 when this shape does not know the module."""
        leaf = name.rsplit(".", 1)[-1]
        if leaf in EMBEDDINGS or leaf in OUTPUT:
            return self.vocab * self.hidden
        linear = self.linear(leaf)
        if linear is not None:
            return linear.params + (linear.layers * linear.d_out if linear.bias else 0)
        if "norm" in leaf:
            return self.hidden * (1 if leaf == "norm" else self.layers)
        return 0

    @classmethod
    def from_config(cls, config: dict, sizes: dict[str, int] | None = None,
                    tensors: dict[str, list[int]] | None = None) -> ModelShape:
        """From a config.json dict and, optionally, the checkpoint's bytes per dtype (`checkpoint_dtypes`) and its
        tensors' shapes by name (`tensor_shapes`)."""
        config = config.get("text_config") or config  # a multimodal config nests the decoder's
        heads = _first(config, "num_attention_heads", "n_head", "num_heads")
        hidden = _first(config, "hidden_size", "n_embd", "d_model")
        checkpoint_bytes, dtype_bytes = (0, 4) if not sizes else checkpoint_size(sizes)
        model_type = str(config.get("model_type", "llama"))
        softcap = config.get("attn_logit_softcapping") is not None
        layer_types = set(config.get("layer_types") or ())
        shape = cls(hidden=hidden, intermediate=config.get("intermediate_size") or 4 * hidden,
                    layers=_first(config, "num_hidden_layers", "n_layer", "num_layers"), heads=heads,
                    kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                    tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                    head_dim=config.get("head_dim") or 0, checkpoint_bytes=checkpoint_bytes,
                    checkpoint_dtype_bytes=dtype_bytes, model_type=model_type, eager_attention=softcap,
                    attention_softcap=softcap, mask_kinds=max(1, len(layer_types)))
        return shape.with_tensors(tensors) if tensors else shape

    def with_tensors(self, tensors: dict[str, list[int]]) -> ModelShape:
        """This shape with its Linears, norms and other parameters as the checkpoint's headers list them."""
        found: dict[str, dict] = {}
        norms, other = 0, 0
        biased = {name[: -len(".bias")] for name in tensors if name.endswith(".bias")}
        for name, shape in tensors.items():
            match = LAYER.search(name)
            parts = name.split(".")
            leaf, kind = (parts[-2], parts[-1]) if len(parts) > 1 else (name, "")
            if leaf in EMBEDDINGS or leaf in OUTPUT:
                continue
            if match and kind == "weight" and len(shape) == 2:
                entry = found.setdefault(leaf, {"d_in": shape[1], "d_out": shape[0], "layers": set(), "bias": False})
                entry["layers"].add(name)  # every instance: experts of one layer are several
                entry["bias"] |= name[: -len(".weight")] in biased
            elif not (kind == "bias" and len(tensors.get(f"{name[: -len('.bias')]}.weight", ())) == 2):
                other += prod(shape)
                norms += bool(match) and len(shape) == 1 and shape[0] == self.hidden and kind == "weight"
        linears = tuple(Linear(leaf, entry["d_in"], entry["d_out"], len(entry["layers"]), entry["bias"])
                        for leaf, entry in found.items() if entry["layers"])
        if not linears:
            return self  # not a layered decoder we can read: keep the family's layout
        biases = sum(linear.layers * linear.d_out for linear in linears if linear.bias)
        return replace(self, linears=linears, other_params=other + biases,
                       norms_per_layer=round(norms / self.layers) or self.layer_norms)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelShape:
        """From a local model directory: config.json plus the headers of its *.safetensors files."""
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        return cls.from_config(config, checkpoint_dtypes(model_dir), tensor_shapes(model_dir))


def _first(config: dict, *keys: str) -> int:
    for key in keys:
        if config.get(key):
            return int(config[key])
    raise KeyError(keys[0])


def family_layout(shape: ModelShape) -> tuple[Linear, ...]:
    """A family's decoder Linears from its dimensions alone (no headers)."""
    h, i, n = shape.hidden, shape.intermediate, shape.layers
    if shape.model_type in FUSED_FAMILIES:
        return (Linear("qkv_proj", h, shape.q_dim + 2 * shape.kv_dim, n), Linear("o_proj", shape.q_dim, h, n),
                Linear("gate_up_proj", h, 2 * i, n), Linear("down_proj", i, h, n))
    qkv_bias = shape.model_type in BIASED_QKV_FAMILIES
    return (Linear("q_proj", h, shape.q_dim, n, qkv_bias), Linear("k_proj", h, shape.kv_dim, n, qkv_bias),
            Linear("v_proj", h, shape.kv_dim, n, qkv_bias), Linear("o_proj", shape.q_dim, h, n),
            Linear("gate_proj", h, i, n), Linear("up_proj", h, i, n), Linear("down_proj", i, h, n))


def checkpoint_dtypes(model_dir: Path) -> dict[str, int]:
    """Tensor bytes per stored dtype over the folder's safetensors files, from their headers (no weights read)."""
    sizes: dict[str, int] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = handle.get_slice(name)
                dtype = tensor.get_dtype()
                sizes[dtype] = sizes.get(dtype, 0) + prod(tensor.get_shape()) * DTYPE_BYTES.get(dtype, 4)
    return sizes


def tensor_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Every tensor's shape by name over the folder's safetensors files, from their headers."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[name] = list(handle.get_slice(name).get_shape())
    return shapes


def checkpoint_size(sizes: dict[str, int]) -> tuple[int, int]:
    """(tensor bytes, bytes per element of the dtype holding most of them)."""
    main = max(sizes, key=sizes.get)
    return sum(sizes.values()), DTYPE_BYTES.get(main, 4)
