"""What a memory estimate is computed from, read without torch: the model's shape (config.json and the sizes in
its safetensors headers), the training shape (the spec's fields that move memory), and a device profile (the
constants measured once per device type). The formula is in jobs/models/memory.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

from safetensors import safe_open

from jobs.models.cpu_dtype import cpu_compute_dtype
from jobs.spec import TrainSpec
from jobs.step_plan import MAX_AUTO_BATCH

MiB = 2**20
GiB = 2**30

INPUT_OF = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "attn_out",
            "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_mid"}
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}

# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects [tokens, vocab] in tiles of this size.
LM_HEAD_TOKEN_TILE = 4096
LM_HEAD_VOCAB_TILE = 32768
BNB_BLOCKSIZE = 64  # 4-bit blocks: one absmax per 64 weights
BNB_NESTED_BLOCKSIZE = 256  # double quant: the absmaxes are 8-bit, with one fp32 scale per 256 of them


# ----------------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder (q/k/v/o attention, gated SiLU MLP, RMSNorm), as far as memory is concerned."""

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

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.dim_per_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim_per_head

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each Linear in one decoder layer."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params_per_layer(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def quantized_params(self) -> int:
        """Weights bitsandbytes quantizes: every decoder Linear (never the embeddings or the LM head)."""
        return self.layers * self.linear_params_per_layer

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden

    @property
    def unquantized_params(self) -> int:
        return self.embedding_params + self.lm_head_params + self.norm_params

    @property
    def total_params(self) -> int:
        return self.quantized_params + self.unquantized_params

    @classmethod
    def from_config(cls, config: dict, sizes: dict[str, int] | None = None) -> ModelShape:
        """From a config.json dict and, optionally, the checkpoint's bytes per dtype (`checkpoint_dtypes`)."""
        heads = config["num_attention_heads"]
        checkpoint_bytes, dtype_bytes = (0, 4) if not sizes else checkpoint_size(sizes)
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                   layers=config["num_hidden_layers"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                   tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                   head_dim=config.get("head_dim") or 0, checkpoint_bytes=checkpoint_bytes,
                   checkpoint_dtype_bytes=dtype_bytes)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelShape:
        """From a local model directory: config.json plus the headers of its *.safetensors files."""
        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        return cls.from_config(config, checkpoint_dtypes(model_dir))


@dataclass(frozen=True)
class TrainShape:
    """The parts of a training spec that move memory."""

    lora_r: int = 8
    target_modules: tuple[str, ...] = ALL_LINEAR
    batch_size: int = 4
    max_length: int = 512
    tokens_per_step: int = 0
    """Tokens in one micro-batch; 0: batch_size * max_length (the most padding-free packing can put in a row)."""
    packing: bool = True
    """Padding-free packing: the batch is one row with a block-diagonal attention mask of T x T."""
    gradient_checkpointing: bool = False
    lora_dropout: float = 0.0
    quantization: str = "nf4"
    """'nf4' | 'fp4' | 'int8' | 'none'."""
    double_quant: bool = True
    optimizer: str = "adamw"
    """'adamw' (torch, states in the LoRA dtype) | 'adamw_8bit' | 'paged_adamw' | 'paged_adamw_8bit'."""
    attention: str = "sdpa"
    """'sdpa' (the default; a packed row needs a T x T mask) | 'flash_attention_2' (varlen: no mask, native GQA)."""
    fused_lm_head: bool = True
    """TRL >= 1.x SFTTrainer's chunked LM head; False for trainers that build the full [T, V] logits."""

    @property
    def tokens(self) -> int:
        return self.tokens_per_step or self.batch_size * self.max_length

    @property
    def mask_elements(self) -> int:
        """Elements of the attention mask SDPA gets: one T x T block-diagonal mask for a packed row, one
        L x L per sequence for padded batches (a padded batch without padding may skip the mask; this is the bound)."""
        if self.packing:
            return self.tokens**2
        return self.batch_size * self.max_length**2

    @classmethod
    def from_spec(cls, spec: TrainSpec, device: DeviceProfile) -> TrainShape:
        """From a studio spec, resolving 'auto' and the optimizer as train() does on `device`."""
        targets = spec.target_module_names()
        checkpointing = (device.auto_checkpointing if spec.gradient_checkpointing == "auto"
                         else spec.gradient_checkpointing == "on")
        optimizer = {"adamw_torch": "adamw", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
                     "paged_adamw_32bit": "paged_adamw"}[spec.optimizer]
        if device.name.startswith("cpu") and optimizer.startswith("paged"):
            optimizer = optimizer.removeprefix("paged_") if "8bit" in optimizer else "adamw"  # unpaged on a CPU
        dpo = spec.method == "dpo"  # each row is a chosen and a rejected sequence, padded, not packed
        # An empty batch size is chosen per job (jobs.step_plan) before any verdict; callers that size only the
        # weights may leave it empty, and then the largest batch the rule picks is assumed.
        batch = spec.batch_size or MAX_AUTO_BATCH
        return cls(lora_r=spec.lora_r, target_modules=ALL_LINEAR if targets == "all-linear" else tuple(targets),
                   batch_size=batch * (2 if dpo else 1), max_length=spec.max_length,
                   packing=spec.packing and not dpo,
                   gradient_checkpointing=checkpointing, lora_dropout=spec.lora_dropout,
                   quantization=spec.quantization, double_quant=spec.double_quant, optimizer=optimizer)


@dataclass(frozen=True)
class DeviceProfile:
    """What differs between devices: dtypes, kernels, allocator, and two measured constants."""

    name: str
    framework_bytes: int
    """Memory before any model: CPU, RSS after importing torch+transformers+trl+peft (+ the studio); CUDA, the
    context (about 0.5 GiB; cuBLAS/cuDNN workspaces come on top)."""
    training_runtime_bytes: int
    """Non-tensor memory that appears once training runs (autograd engine, oneDNN/cuBLAS workspaces, the Trainer,
    the tokenized dataset, lazily paged-in library code). Fitted on the demo model, where tensors are negligible."""
    compute_bytes: int
    """Activation dtype: 4 for fp32 (CPU), 2 for bf16/fp16."""
    lora_bytes: int
    """LoRA weight dtype: fp32 on CPU (the studio keeps it), bf16 on CUDA (SFTTrainer casts it)."""
    dropout_mask_bytes: int
    """LoRA dropout keeps its mask for backward: a float mask in the input dtype on CPU, a bool on CUDA."""
    attention_mask_bytes: int
    """SDPA turns a boolean mask into an additive one in the compute dtype and saves it in every layer."""
    lm_head_tile_copies: float
    """Live [4096 x min(V, 32768)] fp32 tiles in TRL's fused LM head: ~8 in its torch fallback (CPU), ~2 with
    its Triton kernel (CUDA)."""
    allocator_factor: float
    """Resident bytes per live tensor byte for the per-step (dynamic) memory. glibc keeps freed blocks (its mmap
    threshold rises to 32 MiB after the first large free, so activation-sized tensors land in the heap) and
    fragments: ~1.44 measured. ~1.02 with MALLOC_MMAP_THRESHOLD_=65536; ~1.1 for the CUDA caching allocator."""
    allocator_factor_checkpointing: float
    """The same with gradient checkpointing, whose recompute churn (every layer's activations allocated and freed
    twice per step, between long-lived checkpoints) fragments glibc's heap far worse: ~2.8 measured."""
    load_retained_fraction: float
    """Share of the quantized weights' source bytes that the allocator keeps after loading (the fp32 temporaries of
    quantization, freed into per-thread arenas that training never reuses)."""
    maps_checkpoint: bool
    """CPU: unquantized weights in the checkpoint's own dtype are zero-copy views into the mmapped safetensors, so
    the whole file stays mapped and every page touched (all of them) counts in RSS, as clean, reclaimable,
    file-backed memory."""
    auto_checkpointing: bool = False
    """What gradient_checkpointing 'auto' means here (train.py: on for GPUs, off on CPU)."""
    norm_bytes: int = 4
    """Llama's RMSNorm computes in fp32 and saves its fp32 input."""
    residual_bytes: int = 4
    """The residual stream, which checkpointing keeps per layer: fp32 on CPU, and (unverified) fp32 on CUDA too,
    because prepare_model_for_kbit_training upcasts the embeddings to fp32."""
    lse_bytes: int = 4
    """SDPA's saved logsumexp per head and token."""


# Fitted on this machine (2-core x86 CPU, 24 GiB, torch 2.13 CPU, transformers 5.23, trl 1.16, bitsandbytes 0.50,
# glibc 2.36; see measure.py / report.py). framework_bytes is measured directly (RSS after the imports).
CPU = DeviceProfile(name="cpu", framework_bytes=565 * MiB, training_runtime_bytes=64 * MiB, compute_bytes=4,
                    lora_bytes=4, dropout_mask_bytes=4, attention_mask_bytes=4, lm_head_tile_copies=8.3,
                    allocator_factor=1.44, allocator_factor_checkpointing=2.8, load_retained_fraction=0.4,
                    maps_checkpoint=True)

# The same CPU with MALLOC_MMAP_THRESHOLD_=65536 in the trainer's environment: every tensor above 64 KiB is its own
# mapping, returned to the kernel when freed, so RSS follows the live tensors (steps ~30% slower here).
CPU_MMAP = replace(CPU, name="cpu-mmap", allocator_factor=1.02, allocator_factor_checkpointing=1.02)

# The same CPU computing in bf16 ('auto' on a native-bf16 CPU for a wide model, jobs/models/cpu_dtype.py, or set in
# the spec): activations, dropout and attention masks take 2 bytes, LoRA weights and AdamW states too (TRL casts LoRA
# to bf16; the studio keeps fp32 only for fp32 compute), and an fp32 checkpoint is copied into bf16 instead of mapped
# (weight_bytes sees the dtypes differ). No constant refitted: SmolLM2 batch 1 x 512, 2,235 MiB estimated against
# 2,296 MiB measured on the EPYC-512 (tests/jobs/models/test_memory.py checks it on a native-bf16 CPU). float16 takes
# the same bytes; it was not measured on a CPU.
CPU_BF16 = replace(CPU, name="cpu-bf16", compute_bytes=2, lora_bytes=2, dropout_mask_bytes=2, attention_mask_bytes=2)

# Not measured (no GPU here): same structure, constants from the kernels' known behaviour. Calibrate framework and
# runtime with one run per GPU type; compare with torch.cuda.max_memory_reserved() + the context.
CUDA_BF16 = DeviceProfile(name="cuda", framework_bytes=512 * MiB, training_runtime_bytes=256 * MiB, compute_bytes=2,
                          lora_bytes=2, dropout_mask_bytes=1, attention_mask_bytes=2, lm_head_tile_copies=2.0,
                          allocator_factor=1.1, allocator_factor_checkpointing=1.1, load_retained_fraction=0.0,
                          maps_checkpoint=False, auto_checkpointing=True)


def cpu_profile(dtype: str) -> DeviceProfile:
    """The CPU profile for a job computing in `dtype` ('float32', 'bfloat16' or 'float16')."""
    return CPU if dtype == "float32" else CPU_BF16


def training_profile(spec: TrainSpec, model: ModelShape, on_cpu: bool, native_bf16: bool,
                     began_in: str | None = None) -> DeviceProfile:
    """The profile a job of `spec` on `model` trains under: a GPU's, or a CPU's for the dtype it computes in there
    ('auto' weighs whether that CPU multiplies bf16 natively: jobs.models.cpu_dtype). `began_in`: the dtype a resumed
    run began in on a CPU, which 'auto' keeps (jobs.training.run_dtype)."""
    if not on_cpu:
        return CUDA_BF16
    if began_in is not None and spec.compute_dtype == "auto":
        return cpu_profile(began_in)
    return cpu_profile(cpu_compute_dtype(spec.compute_dtype, model.hidden, native_bf16))


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


def checkpoint_size(sizes: dict[str, int]) -> tuple[int, int]:
    """(tensor bytes, bytes per element of the dtype holding most of them)."""
    main = max(sizes, key=sizes.get)
    return sum(sizes.values()), DTYPE_BYTES.get(main, 4)


def with_tokens(train: TrainShape, tokens: int) -> TrainShape:
    """The same shape with a measured tokens-per-step (packing rarely fills every row to max_length)."""
    return replace(train, tokens_per_step=tokens)
