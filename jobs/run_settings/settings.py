"""One resolution: a spec, its base and a machine in; the settings a run trains with out.

Every rule that turns the spec into what the libraries are given lives here once: the compute dtype ('auto' per
device and width, kept by a resumed run), the optimizer (paging falls back on a CPU), gradient checkpointing ('auto'
per device), packing (never for a preference method), mixed precision, the quantization config, the LoRA that trains
(the spec's, or the adapter a job continues) and each preference method's own TRL arguments. Training builds its
Trainer from `RunSettings`, the plain TRL script prints the same values, and the memory estimate sizes them: none of
them restates a rule."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from jobs.rewards import RewardSettings, parse_terms
from jobs.run_settings.cpu_dtype import base_positions, cpu_compute_dtype, hidden_size
from jobs.run_settings.data import DataSettings
from jobs.run_settings.lora import LoraSettings
from jobs.run_settings.speed import ALL_KERNELS, COMPILE, attention_for, compile_for, liger_for, rope_parameters
from jobs.spec import PAIRED_METHODS, PREFERENCE_METHODS, REFERENCE_METHODS, REWARD_METHOD, TrainSpec

DeviceKind = Literal["cpu", "cuda"]

TRAINER_OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit",
                      "paged_adamw_8bit": "paged_adamw_8bit", "paged_adamw_32bit": "paged_adamw_32bit"}
"""What the Trainer calls each spec choice."""
UNPAGED = {"paged_adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "adamw_torch"}
"""Paging needs CUDA: on a CPU the same optimizer runs unpaged."""
PLANNED_FIELDS = ("batch_size", "packing", "learning_rate", "num_epochs")
"""Fields the job's plan (jobs.step_plan) chooses when the person left them empty; the Trainer needs all four."""
SAVE_TOTAL_LIMIT = 2  # design: never fewer than two, so a torn newest checkpoint leaves one to resume from
PACKED_TOKEN_MULTIPLE = 64
"""A packed batch (padding-free: its rows flattened into one sequence) is padded to a multiple of this many tokens.
Unpadded, nearly every step has its own token count, and on a CPU computing in bf16 oneDNN builds and keeps a matmul
primitive per shape (up to 1,024 of them): SmolLM2's default job met 19 counts and its peak grew 270 MB with them.
Padded, it meets two, at no measured cost in speed (the pad tokens are masked from the loss and, being last, are
seen by no real token); a multiple of 64 also suits a GPU's matmul tiles (docs/benchmarks.md, issue 34)."""


@dataclass(frozen=True)
class Machine:
    """What a run's settings depend on in the machine it runs on."""

    device: DeviceKind
    bf16: bool
    """CUDA: the GPU supports bf16; CPU: it multiplies bf16 natively (jobs.run_settings.cpu_dtype.native_bf16)."""
    began_in: str | None = None
    """The dtype an earlier attempt of this run computed in on this kind of device (jobs.training.run_dtype)."""
    kernels: frozenset[str] = frozenset()
    """What it can run beyond the defaults: FlashAttention, Liger, torch.compile (jobs.run_settings.speed)."""
    jemalloc: bool = False
    """CPU: its training processes run with jemalloc preloaded (jobs.run_settings.allocator), whose resident memory
    follows the live tensors more closely than glibc's malloc: the memory estimate's allocator factor differs."""


MACHINES_BY_KIND = (Machine("cpu", bf16=False, kernels=frozenset({COMPILE})),
                    Machine("cpu", bf16=True, kernels=frozenset({COMPILE})),
                    Machine("cuda", bf16=True, kernels=ALL_KERNELS), Machine("cuda", bf16=False, kernels=ALL_KERNELS))
"""Every kind of machine the settings tell apart (the plain script states the settings of each)."""


@dataclass(frozen=True)
class Base:
    """What the settings need of the base model: its width, which 'auto' weighs on a CPU, and its context and RoPE
    parameters, which rope_scaling extends (None: unknown)."""

    hidden: int | None = None
    context: int | None = None
    """max_position_embeddings: the longest input it was trained for."""
    rope: tuple[tuple[str, object], ...] | None = None
    """Its config's rope_parameters, as pairs (the settings stay hashable)."""

    @classmethod
    def from_dir(cls, folder: str | Path) -> Base:
        context, rope = base_positions(folder)
        return cls(hidden=hidden_size(folder), context=context, rope=tuple(rope.items()) if rope else None)


@dataclass(frozen=True)
class RunSettings:
    """What one run trains with. Plan-chosen fields are None only for a spec that was not planned yet."""

    method: Literal["sft", "dpo", "orpo", "kto", "simpo", "grpo", "reward"]
    device: DeviceKind
    compute_dtype: Literal["float32", "bfloat16", "float16"]
    quantization: Literal["nf4", "fp4", "int8", "none"]
    double_quant: bool
    gradient_checkpointing: bool
    optimizer: str
    """The Trainer's `optim` name, as it runs on this device."""
    lora: LoraSettings
    continues_adapter: bool
    """The run trains an existing adapter (init_adapter) rather than a new one; DPO and KTO keep a frozen copy of it
    as their reference."""
    loraplus_lr_ratio: float | None
    """LoRA+: B trains at this many times the learning rate (PEFT's create_loraplus_optimizer); None: off."""
    neftune_noise_alpha: float | None
    """NEFTune's noise on the input embeddings while training (the Trainer's own hook); None: off."""
    batch_size: int | None
    grad_accum: int
    """Micro-batches a step, forward passes of a packed sequence included (the spec's grad_accum x forward_passes)."""
    max_length: int
    """What TRL packs to and cuts at: the spec's max_length, or with forward_passes above 1 the pack length."""
    packing: bool | None
    """Padding-free packing; False for the preference methods, whose trainers pad their rows."""
    assistant_only_loss: bool
    dpo_beta: float
    method_options: tuple[tuple[str, float | str | bool], ...]
    """The method's own TRL arguments beyond the shared ones (ORPO's beta, SimPO's loss, KTO's weights), in TRL's
    names: what `trainer_kwargs` adds for it."""
    learning_rate: float | None
    num_epochs: float | None
    max_steps: int
    lr_scheduler: str
    warmup: float
    weight_decay: float
    max_grad_norm: float
    seed: int
    logging_steps: int
    eval_steps: int
    # Tracking, speed, long inputs
    report_to: str = "none"
    attn_implementation: str | None = None
    """None: the library's own pick (sdpa)."""
    torch_compile: bool = False
    liger_kernel: bool = False
    rope_parameters: tuple[tuple[str, object], ...] | None = None
    """The base's config rope_parameters as the run loads it (rope_scaling), as pairs; None: the base's own."""
    num_generations: int = 4
    """GRPO: answers sampled per prompt; batch_size counts prompts, so a step trains batch_size x this answers."""
    max_completion_length: int = 128
    grpo_beta: float = 0.0
    """GRPO's KL weight; above 0 TRL keeps a frozen copy of the starting adapter as the reference."""
    rewards: RewardSettings | None = None
    """GRPO: what answers are rewarded for (jobs.rewards); None for the other methods."""
    data: DataSettings | None = None
    """The rows' datasets, mix and budget, chat template, system prompt and trained turns (jobs.run_settings.data)."""
    devices: int = 1
    """Data-parallel ranks (torchrun); above 1 the Trainer runs DDP: gloo on a CPU, nccl on CUDA."""
    finetuning: Literal["lora", "freeze", "full"] = "lora"
    """What trains: a LoRA adapter, or the base's own weights (the last `trainable_layers` blocks, or all)."""
    trainable_layers: int | None = None
    """freeze: how many of the last decoder blocks train; None for lora and full."""
    train_head: bool = False
    """freeze: the final norm and the output head train too."""
    jemalloc: bool = False
    """CPU: the run's process has jemalloc preloaded (Machine.jemalloc): the memory estimate's allocator factor."""
    forward_passes: int = 1
    """Packed SFT with a pack_length below max_length: each packed sequence of the spec's max_length tokens trains
    in this many forward passes of max_length / this tokens (TrainSpec.forward_passes, `pack_lengths`)."""
    row_length: int = 0
    """The spec's max_length, where rows are cut (0: as max_length); above max_length only with forward_passes."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Where the run differs from what the spec asked, in words for the run's log."""

    @property
    def has_reference(self) -> bool:
        """The method compares against a reference (the base with the adapter disabled, or a frozen copy of the
        adapter it continues), computed each step without gradients: DPO and KTO; ORPO and SimPO have none."""
        return self.method in REFERENCE_METHODS

    @property
    def paired(self) -> bool:
        """Each row is two sequences, chosen and rejected, in every step (DPO, ORPO, SimPO)."""
        return self.method in PAIRED_METHODS

    @property
    def whole_model(self) -> bool:
        """The base's own weights train (full or freeze) and the run saves a model, not an adapter."""
        return self.finetuning != "lora"

    @property
    def weights_dtype(self) -> str:
        """The dtype the base loads in: a whole-model run keeps fp32 master weights (AdamW on bf16 weights loses
        small updates), and a GPU autocasts to the compute dtype; a LoRA run's frozen base loads in the compute
        dtype."""
        return "float32" if self.whole_model else self.compute_dtype

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    @property
    def bf16(self) -> bool:
        """Trainer's bf16 autocast: on a GPU computing in bf16 (a CPU computes in the loaded dtype, no autocast)."""
        return self.compute_dtype == "bfloat16" and self.device != "cpu"

    @property
    def fp16(self) -> bool:
        return self.compute_dtype == "float16" and self.device != "cpu"

    @property
    def keep_lora_fp32(self) -> bool:
        """TRL casts the LoRA weights of a quantized model to bf16; with fp32 compute that only costs speed and
        precision (measured: fp32 LoRA 1236 vs 949 tokens/s on CPU), so they go back to fp32."""
        return self.compute_dtype == "float32"

    @property
    def pad_to_multiple_of(self) -> int | None:
        """Packed SFT: the token multiple the collator pads each batch to (PACKED_TOKEN_MULTIPLE); else None."""
        return PACKED_TOKEN_MULTIPLE if self.packing and self.method == "sft" else None

    @property
    def upcasts_unquantized(self) -> bool:
        """peft's prepare_model_for_kbit_training casts a quantized base's unquantized weights (embeddings, norms,
        an untied head) to fp32, and with them the residual stream and every activation between the 4-bit matmuls.
        In bf16 they go back to bf16, as LLaMA-Factory (upcast_layernorm off) and Unsloth keep them: bf16 has fp32's
        range, and on SmolLM2 the saved activations halve (652 → 366 MB a 512-token step), the job's peak falls 378
        MB and its steps run faster, at the same held-out loss (docs/benchmarks.md, issue 34). fp16's narrow range
        keeps the fp32 norms the QLoRA recipe gives it; an fp32 run has nothing to cast. An unquantized base is not
        prepared so: it trains in the dtype it loaded in."""
        return self.quantized and self.compute_dtype != "bfloat16"

    @property
    def releases_checkpoint(self) -> bool:
        """After loading, copy the unquantized weights out of the mmapped checkpoint (so the file is unmapped) and
        hand the quantizer's freed temporaries back to the system: on a CPU a quantized base otherwise keeps the whole
        file and those temporaries resident through training for no use (jobs.models.loading.release_loading_memory;
        measured in bench/memory_breakdown.py). A GPU run's weights live on the GPU."""
        return self.device == "cpu" and self.quantized

    def quantization_kwargs(self) -> dict | None:
        """transformers' BitsAndBytesConfig keyword arguments (None: the base is not quantized)."""
        return quantization_kwargs(self.quantization, self.double_quant, self.compute_dtype)

    def model_kwargs(self) -> dict:
        """from_pretrained's keyword arguments beyond the quantization: the attention kernel and the RoPE scaling."""
        kwargs: dict = {}
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.rope_parameters is not None:
            kwargs["rope_parameters"] = dict(self.rope_parameters)
        return kwargs

    def ddp_kwargs(self) -> dict:
        """Several devices: the Trainer's own DDP. Only LoRA weights train and all of them are used every step, so
        DDP need not search for unused parameters (it would cost a graph walk per step); tokens are averaged across
        the ranks, so an assistant-only mask weighs a token the same whichever rank holds its row."""
        if self.devices <= 1:
            return {}
        return {"ddp_backend": "gloo" if self.device == "cpu" else "nccl", "ddp_find_unused_parameters": False,
                "average_tokens_across_devices": True}

    def trainer_kwargs(self) -> dict:
        """The SFTConfig / DPOConfig keyword arguments every run shares (where it writes, when it evaluates and saves
        are the caller's). Raises ValueError for a spec whose plan has not chosen its empty fields."""
        if unchosen := [name for name in PLANNED_FIELDS if getattr(self, name) is None]:
            raise ValueError(f"choose {', '.join(unchosen)} first (jobs.planning.job_plan)")
        shared = dict(
            optim=self.optimizer, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            max_steps=self.max_steps, num_train_epochs=self.num_epochs,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum, learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler, warmup_steps=self.warmup, logging_steps=self.logging_steps,
            eval_steps=self.eval_steps, save_total_limit=SAVE_TOTAL_LIMIT, seed=self.seed, data_seed=self.seed,
            bf16=self.bf16, fp16=self.fp16, gradient_checkpointing=self.gradient_checkpointing,
            max_length=self.max_length, use_cpu=self.device == "cpu", report_to=self.report_to,
            dataloader_num_workers=0, neftune_noise_alpha=self.neftune_noise_alpha, torch_compile=self.torch_compile,
            use_liger_kernel=self.liger_kernel, **self.ddp_kwargs())
        if self.method == "dpo":
            return {**shared, "beta": self.dpo_beta, "precompute_ref_log_probs": False}
        if self.method in PREFERENCE_METHODS:
            return {**shared, **dict(self.method_options)}
        if self.method == "grpo":
            return {**grpo_kwargs(shared, self.num_generations), "num_generations": self.num_generations,
                    "max_completion_length": self.max_completion_length, "beta": self.grpo_beta,
                    "reward_weights": self.rewards.weights, "log_completions": False}
        # Last turn only: the rows are conversational prompt/completion pairs (jobs.data.mixing.last_turn_only),
        # and TRL masks the prompt.
        last_turn = self.data is not None and self.data.last_turn_only
        return {**shared, "packing": self.packing, "padding_free": self.packing,
                "pad_to_multiple_of": self.pad_to_multiple_of,
                "assistant_only_loss": self.assistant_only_loss, "completion_only_loss": True if last_turn else None}


def grpo_kwargs(shared: dict, num_generations: int) -> dict:
    """GRPOConfig counts its batch in answers and truncates nothing itself (no max_length): batch_size prompts are
    batch_size x num_generations answers, so every generation batch holds whole groups, as TRL requires."""
    answers = shared["per_device_train_batch_size"] * num_generations
    kept = {key: value for key, value in shared.items() if key != "max_length"}
    return {**kept, "per_device_train_batch_size": answers, "per_device_eval_batch_size": answers}


def resolve(spec: TrainSpec, base: Base, machine: Machine, adapter: LoraSettings | None = None) -> RunSettings:
    """The settings a run of `spec` (planned: jobs.step_plan) on `base` trains with on `machine`. `adapter`: the
    LoRA of the adapter the job continues (init_adapter), which trains instead of the spec's LoRA fields."""
    dtype, dtype_note = compute_dtype(spec, base, machine)
    optimizer, optimizer_note = optimizer_for(spec, machine.device)
    preference = spec.method in PREFERENCE_METHODS
    passes = spec.forward_passes()  # packed SFT in several forward passes: TRL gets the pack length (pack_lengths)
    attention, attention_note = attention_for(spec.attn_implementation, machine.device, machine.kernels)
    compiled, compile_note = compile_for(spec.torch_compile, machine.device, machine.kernels)
    liger, liger_note = liger_for(spec.liger_kernel, machine.device, machine.kernels)
    rope = rope_parameters(spec.rope_scaling, spec.rope_factor, dict(base.rope or ()), base.context)
    # Full and freeze train the base's own weights, which bitsandbytes' quantized weights cannot: it loads unquantized.
    whole = spec.finetuning != "lora"
    quantization = "none" if whole else spec.quantization
    whole_note = None
    if whole and spec.quantization != "none":
        whole_note = (f"{spec.finetuning} fine-tuning: the base loads unquantized in float32 (quantization "
                      f"{spec.quantization} is for a LoRA run's frozen base)")
    return RunSettings(
        method=spec.method, device=machine.device, compute_dtype=dtype, quantization=quantization,
        double_quant=spec.double_quant and quantization in ("nf4", "fp4"),
        gradient_checkpointing=gradient_checkpointing(spec, machine.device), optimizer=optimizer,
        lora=adapter if adapter is not None else lora_for(spec),
        continues_adapter=bool(spec.init_adapter), loraplus_lr_ratio=spec.loraplus_lr_ratio,
        neftune_noise_alpha=spec.neftune_noise_alpha, batch_size=spec.batch_size,
        grad_accum=spec.grad_accum * passes, max_length=spec.max_length // passes,
        packing=False if preference or spec.method == "grpo" else spec.packing,
        assistant_only_loss=spec.assistant_only_loss, dpo_beta=spec.dpo_beta,
        method_options=method_options(spec), learning_rate=spec.learning_rate,
        num_epochs=spec.num_epochs, max_steps=spec.max_steps, lr_scheduler=spec.lr_scheduler,
        warmup=spec.warmup_ratio, weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm, seed=spec.seed,
        logging_steps=spec.logging_steps, eval_steps=spec.eval_steps, data=DataSettings.from_spec(spec),
        report_to=spec.report_to, attn_implementation=attention, torch_compile=compiled, liger_kernel=liger,
        rope_parameters=tuple(rope.items()) if rope else None,
        num_generations=spec.num_generations, max_completion_length=spec.max_completion_length,
        grpo_beta=spec.grpo_beta, rewards=reward_settings(spec) if spec.method == "grpo" else None,
        devices=spec.devices, finetuning=spec.finetuning,
        trainable_layers=spec.freeze_trainable_layers if spec.finetuning == "freeze" else None,
        train_head=spec.finetuning == "freeze" and spec.freeze_train_head,
        jemalloc=machine.jemalloc and machine.device == "cpu", forward_passes=passes, row_length=spec.max_length,
        notes=tuple(note for note in (dtype_note, optimizer_note, attention_note, compile_note, liger_note, whole_note)
                    if note))


def pack_lengths(max_length: int, longest_row: int, passes: tuple[int, ...]) -> list[int]:
    """The pack lengths that train a packed sequence of max_length tokens in each of `passes` forward passes and cut
    no row (each holds the longest row, itself cut at max_length; 0: unknown, so none).

    TRL packs to and cuts at one max_length, so a run with a pack_length gives TRL the pack length and multiplies
    grad_accum by the passes (`resolve`): a step trains the same tokens in shorter passes. No row is cut shorter than
    the spec's max_length: the memory fit picks only these (jobs.models.budget), submit refuses a shorter pack_length
    (jobs.step_plan.pack_length_problem), and training refuses a longer row (prepare.check_pack_length)."""
    if not longest_row:
        return []
    longest = min(longest_row, max_length)
    return [max_length // n for n in passes if max_length % n == 0 and max_length // n >= max(longest, 16)]


def lora_for(spec: TrainSpec) -> LoraSettings:
    """The new LoRA the spec asks for; a reward model's is a sequence classifier's (peft adds its score head)."""
    lora = LoraSettings.from_spec(spec)
    return replace(lora, task_type="SEQ_CLS") if spec.method == REWARD_METHOD else lora


def method_options(spec: TrainSpec) -> tuple[tuple[str, float | str | bool], ...]:
    """What the method's TRL config takes beyond the shared arguments, in TRL's names. SimPO is TRL's CPO with the
    SimPO loss and no behaviour-cloning term (cpo_alpha 0); TRL takes its margin as gamma itself, not the ratio."""
    if spec.method == "orpo":
        return (("beta", spec.orpo_lambda),)
    if spec.method == "simpo":
        return (("loss_type", "simpo"), ("cpo_alpha", 0.0), ("beta", spec.simpo_beta),
                ("simpo_gamma", spec.simpo_gamma_ratio * spec.simpo_beta))
    if spec.method == "kto":
        return (("beta", spec.kto_beta), ("desirable_weight", spec.kto_desirable_weight),
                ("undesirable_weight", spec.kto_undesirable_weight), ("precompute_ref_log_probs", False))
    return ()
def reward_settings(spec: TrainSpec) -> RewardSettings:
    return RewardSettings(terms=tuple(parse_terms(spec.grpo_rewards)), reference_match=spec.grpo_reference_match,
                          json_schema=spec.grpo_json_schema, regex=spec.grpo_regex, min_chars=spec.grpo_min_chars,
                          max_chars=spec.grpo_max_chars)


def quantization_kwargs(quantization: str, double_quant: bool, compute_dtype: str) -> dict | None:
    """transformers' BitsAndBytesConfig keyword arguments for a base stored as `quantization` (None: unquantized);
    plain values, which the generated script prints and BitsAndBytesConfig reads (a dtype by its name)."""
    if quantization == "none":
        return None
    if quantization == "int8":
        return {"load_in_8bit": True}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": quantization, "bnb_4bit_use_double_quant": double_quant,
            "bnb_4bit_compute_dtype": compute_dtype}


def compute_dtype(spec: TrainSpec, base: Base, machine: Machine) -> tuple[str, str | None]:
    """(the dtype the run computes in, a note when a resumed run keeps another than this machine would pick).

    'auto': on a CPU, bf16 where it multiplies bf16 natively and the base is wide enough (jobs.run_settings.cpu_dtype);
    on a GPU, bf16 where it supports it, else fp16. A resumed run keeps the dtype it began in on this kind of device,
    so its adapter is not trained partly in one dtype and partly in another."""
    if spec.compute_dtype != "auto":
        return spec.compute_dtype, None
    if machine.device == "cpu":
        picked = cpu_compute_dtype("auto", base.hidden, machine.bf16)
    else:
        picked = "bfloat16" if machine.bf16 else "float16"
    if machine.began_in is not None and machine.began_in != picked:
        return machine.began_in, (f"compute dtype {machine.began_in}, as this run began (this machine would pick "
                                  f"{picked} for 'auto')")
    return picked, None


def optimizer_for(spec: TrainSpec, device: DeviceKind) -> tuple[str, str | None]:
    """The Trainer's optimizer name on `device`, and a note when it is not what the spec asked for."""
    if device == "cpu" and spec.optimizer in UNPAGED:
        ran = UNPAGED[spec.optimizer]
        return ran, (f"note: {spec.optimizer} pages its states between GPU and CPU memory, which needs CUDA; on this "
                     f"CPU the same optimizer runs unpaged ({ran})")
    return TRAINER_OPTIMIZERS[spec.optimizer], None


def gradient_checkpointing(spec: TrainSpec, device: DeviceKind) -> bool:
    if spec.gradient_checkpointing == "auto":
        return device != "cpu"  # CPU runs are small; checkpointing measured ~30% slower there
    return spec.gradient_checkpointing == "on"
