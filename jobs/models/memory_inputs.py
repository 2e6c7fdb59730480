"""What a memory estimate is computed from, read without torch: the model's shape (config.json and the sizes in
its safetensors headers), the training shape (what the run settings hold in memory: jobs.run_settings resolves the
spec once, for training and the estimate alike), and a device profile (the constants measured once per device
type). The formula is in jobs/models/memory.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from jobs.models.shape import (  # noqa: F401 (re-exported: the estimate's inputs live here)
    DTYPE_BYTES,
    INPUT_OF,
    Linear,
    ModelShape,
    checkpoint_dtypes,
    checkpoint_size,
)
from jobs.run_settings.lora import ALL_LINEAR
from jobs.run_settings.settings import RunSettings
from jobs.spec import field_default

MiB = 2**20
GiB = 2**30

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects [tokens, vocab] in tiles of this size.
LM_HEAD_TOKEN_TILE = 4096
LM_HEAD_VOCAB_TILE = 32768
BNB_BLOCKSIZE = 64  # 4-bit blocks: one absmax per 64 weights
UNFUSED_LM_HEAD = ("orpo", "simpo")
"""Methods whose TRL trainer (experimental ORPO, CPO) projects every position to full-vocabulary logits."""
BNB_NESTED_BLOCKSIZE = 256  # double quant: the absmaxes are 8-bit, with one fp32 scale per 256 of them


# ----------------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TrainShape:
    """The parts of a training spec that move memory."""

    lora_r: int = field_default("lora_r")
    target_modules: tuple[str, ...] | str = ALL_LINEAR
    """Module names LoRA adapts (decoder Linears, and embed_tokens or lm_head), or 'all-linear'."""
    batch_size: int = 4
    """Sequences per step: with DPO, ORPO and SimPO, each preference pair is two (chosen and rejected)."""
    max_length: int = field_default("max_length")
    tokens_per_step: int = 0
    """Tokens in one micro-batch; 0: from the batch and the sequence length."""
    longest_sequence: int = 0
    """The data's longest sequence in tokens (for a pair, a prompt with its longer answer); 0: unknown, max_length. A
    padded batch is as long as its longest row, so the step holding it peaks at batch x min(this, max_length)."""
    packing: bool = True
    """Padding-free packing: the batch is one row with a block-diagonal attention mask of T x T."""
    gradient_checkpointing: bool = False
    lora_dropout: float = 0.0
    use_dora: bool = False
    """DoRA: a magnitude vector per adapted output, and two more saved outputs per adapted Linear."""
    modules_to_save: tuple[str, ...] = ()
    """Modules trained in full: a trainable copy each, with its gradient and optimizer states."""
    trainable_biases: str = "none"
    """lora_bias: 'none', 'all' (every bias of the model) or 'lora_only' (those of the adapted Linears)."""
    preference: bool = False
    """DPO and KTO: the reference is the same base with the adapter disabled (no second base), computed each step
    under no_grad on the same padded batch (KTO's KL pass on mismatched answers too, also without gradients). ORPO and
    SimPO have no reference."""
    reference_adapter: bool = False
    """DPO or KTO started from an adapter: TRL keeps a frozen copy of it as the reference ('ref')."""
    generation_sequences: int = 0
    """GRPO: answers sampled at once (the generation batch: batch x num_generations x grad_accum), each a prompt and
    up to max_completion_length tokens with its KV cache; 0: the run samples nothing."""
    reward_model: bool = False
    """GRPO's reward_model reward: a second copy of the base (loaded as the run's, with the reward adapter) stays
    resident, and scores the generation batch without gradients, one layer at a time."""
    quantization: str = "nf4"
    """'nf4' | 'fp4' | 'int8' | 'none'."""
    double_quant: bool = True
    optimizer: str = "adamw_torch"
    """The Trainer's optim: 'adamw_torch' (states in the LoRA dtype), 'adamw_bnb_8bit', or a paged one
    ('paged_adamw_32bit', 'paged_adamw_8bit', only on CUDA)."""
    attention: str = "sdpa"
    """'sdpa' (the default; a packed row needs a T x T mask) | 'flash_attention_2' (varlen: no mask, native GQA) |
    'eager' (the spec asks for it: as a family that runs eager, it keeps heads x T x T probabilities per layer)."""
    fused_lm_head: bool = True
    """TRL >= 1.x's chunked LM head (SFT, DPO, KTO); False for trainers that build the full [T, V] logits (TRL's
    experimental ORPO and CPO, so SimPO)."""
    lm_head: bool = True
    """False for a reward model: its head is a score with one output read at the last token, so the loss has no
    vocabulary projection (the untied LM head's weights, not loaded then, are still counted: a small over-estimate)."""
    lora_init: str = "default"
    """The LoRA's init as PEFT names it: PiSSA, OLoRA and LoftQ decompose each adapted weight once, after loading."""
    finetuning: str = "lora"
    """'lora', or 'freeze' / 'full': the base's own weights train (fp32 master weights, a gradient and AdamW's two
    states for each trained one), no LoRA."""
    trainable_layers: int = 0
    """freeze: how many of the last decoder blocks train."""
    train_head: bool = False
    """freeze: the final norm and the output head train too."""
    releases_checkpoint: bool = False
    """After loading, the unquantized weights are copied out of the mmapped checkpoint (the file is unmapped) and the
    quantizer's freed temporaries go back to the system (RunSettings.releases_checkpoint): neither stays resident
    through training."""
    upcast_unquantized: bool = True
    """A quantized base's embeddings and norms are fp32 in training (RunSettings.upcasts_unquantized), and with them
    the residual stream; False (bf16): both stay in the compute dtype."""
    pad_multiple: int = 0
    """A packed batch is padded to a multiple of this many tokens (RunSettings.pad_to_multiple_of); 0: not padded."""

    @property
    def sequence_length(self) -> int:
        """One sequence's tokens: max_length, or the data's longest sequence when that is shorter (padded batches;
        packing fills each sequence to max_length)."""
        if self.packing or not self.longest_sequence:
            return self.max_length
        return min(self.max_length, self.longest_sequence)

    @property
    def tokens(self) -> int:
        tokens = self.tokens_per_step or self.batch_size * self.sequence_length
        return -(-tokens // self.pad_multiple) * self.pad_multiple if self.packing and self.pad_multiple else tokens

    @property
    def mask_elements(self) -> int:
        """Elements of the attention mask SDPA gets: one T x T block-diagonal mask for a packed row, one
        L x L per sequence for padded batches (a padded batch without padding may skip the mask; this is the bound)."""
        if self.packing:
            return self.tokens**2
        return self.batch_size * self.sequence_length**2

    @classmethod
    def from_settings(cls, settings: RunSettings, longest_sequence: int = 0) -> TrainShape:
        """What a run with these settings (jobs.run_settings) holds in memory. `longest_sequence`: the data's longest
        sequence in tokens, when known (it bounds a padded batch's length)."""
        if settings.batch_size is None:
            raise ValueError("choose batch_size first (jobs.planning.job_plan): the estimate sizes the job's batch")
        if settings.method == "grpo":
            return cls._grpo(settings, longest_sequence)
        lora = settings.lora  # each pair (DPO, ORPO, SimPO) is a chosen and a rejected sequence
        # An empty packing is on unless the data is tiny (the plan's choice): packing's full rows are the larger bound.
        return cls(lora_r=lora.r, target_modules=lora.target_modules,
                   batch_size=settings.batch_size * (2 if settings.paired else 1), max_length=settings.max_length,
                   longest_sequence=longest_sequence, packing=settings.packing is not False,
                   gradient_checkpointing=settings.gradient_checkpointing, lora_dropout=lora.dropout,
                   use_dora=lora.use_dora, modules_to_save=lora.modules_to_save, trainable_biases=lora.bias,
                   preference=settings.has_reference,
                   reference_adapter=settings.has_reference and settings.continues_adapter,
                   fused_lm_head=settings.method not in UNFUSED_LM_HEAD, lm_head=settings.method != "reward",
                   quantization=settings.quantization, double_quant=settings.double_quant,
                   optimizer=settings.optimizer, releases_checkpoint=settings.releases_checkpoint,
                   upcast_unquantized=settings.upcasts_unquantized, pad_multiple=settings.pad_to_multiple_of or 0,
                   lora_init=lora.init, attention=settings.attn_implementation or "sdpa",
                   finetuning=settings.finetuning, trainable_layers=settings.trainable_layers or 0,
                   train_head=settings.train_head)


    @classmethod
    def _grpo(cls, settings: RunSettings, longest_row: int) -> TrainShape:
        """GRPO: each prompt is num_generations padded sequences of the prompt and its answer (the longest row stands
        for the longest prompt; the answer is up to max_completion_length, and both fit in max_length); with beta > 0
        TRL keeps a frozen copy of the starting adapter and runs a no-grad reference pass, as DPO does. A reward_model
        reward keeps a second copy of the base with the reward adapter."""
        lora, answers = settings.lora, settings.batch_size * settings.num_generations
        length = min(settings.max_length, (longest_row or settings.max_length) + settings.max_completion_length)
        kl = settings.grpo_beta > 0
        return cls(lora_r=lora.r, target_modules=lora.target_modules, batch_size=answers,
                   max_length=settings.max_length, longest_sequence=length, packing=False,
                   gradient_checkpointing=settings.gradient_checkpointing, lora_dropout=lora.dropout,
                   use_dora=lora.use_dora, modules_to_save=lora.modules_to_save, trainable_biases=lora.bias,
                   preference=kl, reference_adapter=kl, quantization=settings.quantization,
                   double_quant=settings.double_quant, optimizer=settings.optimizer,
                   releases_checkpoint=settings.releases_checkpoint,
                   upcast_unquantized=settings.upcasts_unquantized, generation_sequences=answers * settings.grad_accum,
                   reward_model=settings.rewards is not None and settings.rewards.uses_reward_model)

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
# (weight_bytes sees the dtypes differ). Activations are bf16 in fact only since the run keeps the base's embeddings
# and norms in bf16 (RunSettings.upcasts_unquantized; before, peft's fp32 upcast made them fp32 and this profile was
# low on them). No constant refitted: SmolLM2 batch 1 x 512, 3 steps under jemalloc, 1,718 MiB estimated against
# 1,563 MiB measured on the AMX Xeon (tests/jobs/models/test_memory.py checks it on a native-bf16 CPU). float16 takes
# the same bytes; it was not measured on a CPU.
CPU_BF16 = replace(CPU, name="cpu-bf16", compute_bytes=2, lora_bytes=2, dropout_mask_bytes=2, attention_mask_bytes=2)

# Not measured (no GPU here): same structure, constants from the kernels' known behaviour. Calibrate framework and
# runtime with one run per GPU type; compare with torch.cuda.max_memory_reserved() + the context.
CUDA_BF16 = DeviceProfile(name="cuda", framework_bytes=512 * MiB, training_runtime_bytes=256 * MiB, compute_bytes=2,
                          lora_bytes=2, dropout_mask_bytes=1, attention_mask_bytes=2, lm_head_tile_copies=2.0,
                          allocator_factor=1.1, allocator_factor_checkpointing=1.1, load_retained_fraction=0.0,
                          maps_checkpoint=False)


# The same CPU with jemalloc preloaded, as the worker runs every training process where libjemalloc is installed
# (jobs.run_settings.allocator). jemalloc hands freed activations back to the kernel (its decay), so the resident set
# follows the live tensors: factor 1.0, with and without checkpointing, where glibc's kept 1.44x and 2.8x. It costs a
# fixed 48 MiB more runtime (its arenas and the dirty pages it keeps until they decay; 42-43 MiB measured), which the
# demo model shows, its tensors being small. Fitted on tests/jobs/models/test_memory.py's three runs, 4 steps each
# under both allocators (bench/allocator_fit.py, docs/benchmarks.md "The allocator factor under jemalloc"): the
# estimate is 0.6-0.8% above the demo's measured peaks and 4.7% above SmolLM2's. The bf16 variant takes the same
# constants (not measured: no native-bf16 CPU here).
JEMALLOC = {"training_runtime_bytes": CPU.training_runtime_bytes + 48 * MiB, "allocator_factor": 1.0,
            "allocator_factor_checkpointing": 1.0}
CPU_JEMALLOC = replace(CPU, name="cpu-jemalloc", **JEMALLOC)
CPU_BF16_JEMALLOC = replace(CPU_BF16, name="cpu-bf16-jemalloc", **JEMALLOC)


def cpu_profile(dtype: str, jemalloc: bool = False) -> DeviceProfile:
    """The CPU profile for a job computing in `dtype` ('float32', 'bfloat16' or 'float16'), its process running
    with jemalloc or glibc's malloc."""
    if dtype == "float32":
        return CPU_JEMALLOC if jemalloc else CPU
    return CPU_BF16_JEMALLOC if jemalloc else CPU_BF16


# A GPU computing in fp32 (the spec sets it): activations, masks, LoRA weights and AdamW states take 4 bytes. Not
# measured either; derived from CUDA_BF16 as CPU_BF16 is from CPU.
CUDA_FP32 = replace(CUDA_BF16, name="cuda-fp32", compute_bytes=4, lora_bytes=4, attention_mask_bytes=4)


def profile_for(settings: RunSettings) -> DeviceProfile:
    """The profile a run with these settings trains under, for the device and the dtype it computes in."""
    if settings.device == "cuda":
        return CUDA_FP32 if settings.compute_dtype == "float32" else CUDA_BF16
    return cpu_profile(settings.compute_dtype, settings.jemalloc)


def with_tokens(train: TrainShape, tokens: int) -> TrainShape:
    """The same shape with a measured tokens-per-step (packing rarely fills every row to max_length)."""
    return replace(train, tokens_per_step=tokens)
