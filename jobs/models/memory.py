"""Peak-memory estimator for QLoRA training (the studio's `train()`: bitsandbytes 4-bit base, LoRA, TRL SFTTrainer
with padding-free packing, AdamW).

Pure Python, no torch: the inputs are numbers from a model's config.json and its safetensors header, the training
spec, and a `DeviceProfile` (constants measured once per device type). The result is a breakdown in bytes, so the UI
can say *what* the memory goes to; CPU (peak RSS) and CUDA (peak reserved + context) share the formula and differ
in their profiles.

The formula (T = tokens in one micro-batch: padding-free packing concatenates batch_size sequences of up to
max_length tokens into ONE row, so T <= batch_size * max_length; n layers, hidden h, intermediate I, H heads of d,
vocab V, LoRA rank r, a = activation bytes, m = dropout-mask bytes, M = additive-mask bytes):

    peak       = max(load_peak, train_peak)
    train_peak = static + f_alloc * dynamic
    static     = framework + runtime + load_retained + checkpoint_mmap + W_4bit + W_unquantized
                 + P_lora * (lora_bytes * 2 + optimizer bytes per param)
    W_4bit     = n * sum(d_in * d_out) * 4.127 / 8      (4.5 / 8 without double quant; blocksize 64)
    P_lora     = n * r * sum over targets of (d_in + d_out)
    dynamic    = activations + attention_masks + max(lm_head_tiles, layer_backward [+ recomputed layer])
    activations (no checkpointing) = n * T * A_token + shared(T)
    A_token    = 2 * (4h + 4)                                  RMSNorm inputs (fp32) + rsqrt
               + sum over LoRA targets ((m + a) * d_in + a * r)  dropout mask + dropped input + lora_A output
               + a * (2 * H * d + 2 * kv_saved) + 4 * H          SDPA q, k, v, out (+ logsumexp)
               + 3 * a * I                                       MLP: gate, SiLU(gate), up
    attention_masks = n * M * T^2                              packed row: SDPA saves a float T x T mask per layer
    lm_head_tiles   = c_tile * min(T, 4096) * min(V, 32768) * 4  TRL's fused, chunked LM head (no T x V logits)
    with checkpointing: activations = n * T * h * a + shared; one layer (T * A_token + M * T^2) is recomputed at a
    time during backward and competes with the LM-head tiles for the transient slot.

The peak is at the start of backward: every saved activation is alive and the LM head's backward runs; later
transients (a layer's backward, its recomputation) come one after another, hence the max.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.models.memory_inputs import (
    BNB_BLOCKSIZE,
    BNB_NESTED_BLOCKSIZE,
    CPU,
    INPUT_OF,
    LM_HEAD_TOKEN_TILE,
    LM_HEAD_VOCAB_TILE,
    DeviceProfile,
    MiB,
    ModelShape,
    TrainShape,
)


def lora_params(model: ModelShape, train: TrainShape) -> int:
    """r * (in + out) per adapted Linear: A is r x in, B is out x r."""
    shapes = model.linear_shapes()
    return model.layers * sum(train.lora_r * (shapes[m][0] + shapes[m][1]) for m in train.target_modules if m in shapes)


def quantized_bits_per_param(train: TrainShape) -> float:
    """4-bit: 4 bits + one fp32 absmax per 64 weights (4.5); with double quant the absmaxes are 8-bit with an fp32
    scale per 256 of them (4 + 8/64 + 32/(64*256) = 4.127). int8: 8 bits + fp32 row scales (~8.0)."""
    if train.quantization in ("nf4", "fp4"):
        if train.double_quant:
            return 4 + 8 / BNB_BLOCKSIZE + 32 / (BNB_BLOCKSIZE * BNB_NESTED_BLOCKSIZE)
        return 4 + 32 / BNB_BLOCKSIZE
    if train.quantization == "int8":
        return 8.0
    raise ValueError(f"not quantized: {train.quantization}")


def weight_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> dict[str, int]:
    """Frozen base: 4-bit Linears, and the parts bitsandbytes leaves alone (embeddings, norms, untied LM head).

    peft's prepare_model_for_kbit_training casts every unquantized fp16/bf16 parameter to fp32, so on CUDA those
    take 4 bytes each, not the load dtype's 2. On CPU (fp32 load of an fp32 checkpoint) they are zero-copy views of
    the mmapped file, counted in `checkpoint_mmap` instead."""
    if train.quantization == "none":
        quantized = model.quantized_params * device.compute_bytes
    else:
        quantized = int(model.quantized_params * quantized_bits_per_param(train) / 8)
    zero_copy = device.maps_checkpoint and model.checkpoint_dtype_bytes == device.compute_bytes
    mmap = model.checkpoint_bytes or model.total_params * model.checkpoint_dtype_bytes
    return {"quantized_weights": quantized,
            "unquantized_weights": 0 if zero_copy else model.unquantized_params * 4,
            "checkpoint_mmap": mmap if zero_copy else 0}


def optimizer_bytes(n_params: int, train: TrainShape, device: DeviceProfile) -> tuple[int, int]:
    """(device bytes, host bytes) of the optimizer states. torch AdamW keeps exp_avg and exp_avg_sq in the
    parameter's dtype; bitsandbytes 8-bit Adam keeps 1 byte each (+ block scales); paged optimizers live in
    unified memory and are evicted to the host under pressure (counted on the host here)."""
    per_param = 2 * (1 + 4 / 2048) if "8bit" in train.optimizer else 2 * device.lora_bytes
    states = int(n_params * per_param)
    return (0, states) if train.optimizer.startswith("paged") else (states, 0)


def layer_activation_bytes_per_token(model: ModelShape, train: TrainShape, device: DeviceProfile) -> float:
    """Bytes saved for backward per token in one decoder layer (without the T x T mask), as autograd keeps them.

    Counted from what each op saves (verified with a saved-tensor hook on SmolLM2 and the demo model):
      - each RMSNorm: its fp32 input and the per-token rsqrt (the weight is frozen, so the output is not saved);
      - each LoRA'd Linear with dropout: the dropout mask and the dropped input (each module has its own, even where
        q/k/v share an input), and lora_A's output (r) for lora_B. Without dropout, modules sharing an input share it;
      - the 4-bit base Linear saves nothing but its packed weight (frozen), so inputs of non-LoRA Linears are free;
      - attention (SDPA): q, k, v (k/v repeated to all heads when a mask is given, since GQA then falls back to
        repeat_kv), the output and a per-head logsumexp; RoPE saves only the shared cos/sin;
      - MLP: gate output (for SiLU), SiLU output and up output (for the product): 3 x intermediate.
    """
    act, h, i = device.compute_bytes, model.hidden, model.intermediate
    norms = 2 * (h * device.norm_bytes + 4)
    shapes = model.linear_shapes()
    targets = [m for m in train.target_modules if m in shapes]
    if train.lora_dropout > 0:
        lora = sum((device.dropout_mask_bytes + act) * shapes[m][0] + act * train.lora_r for m in targets)
    else:  # nn.Identity: lora_A saves the input itself, shared by the modules that read the same tensor
        inputs = {INPUT_OF[m]: shapes[m][0] for m in targets}
        lora = act * (sum(inputs.values()) + train.lora_r * len(targets))
    kv_saved = model.q_dim if _gqa_repeats(model, train) else model.kv_dim
    attention = act * (2 * model.q_dim + 2 * kv_saved) + device.lse_bytes * model.heads
    mlp = act * 3 * i
    return norms + lora + attention + mlp


def uses_mask(train: TrainShape) -> bool:
    """SDPA gets an explicit mask for a packed row (several sequences) or a padded batch; flash-attention's varlen
    kernel takes sequence offsets instead."""
    return train.attention == "sdpa" and (train.packing or train.batch_size > 1)


def _gqa_repeats(model: ModelShape, train: TrainShape) -> bool:
    """transformers passes enable_gqa to SDPA only without a mask; with one, k/v are repeated to all heads."""
    return model.kv_heads != model.heads and uses_mask(train)


def activation_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> dict[str, int]:
    """Saved-for-backward memory when backward starts, plus the shared inputs (cos/sin, the boolean mask, the
    embedding output, final norm and the LM head's input).

    Without checkpointing every layer keeps its activations and its own float copy of the T x T mask. With
    checkpointing (transformers 5: non-reentrant) each layer keeps only its input (T x hidden); the layer
    recomputed during backward is counted in `transient_peak`."""
    t, act = train.tokens, device.compute_bytes
    shared = (train.mask_elements if uses_mask(train) else 0) + 2 * t * model.dim_per_head * act \
        + 3 * t * model.hidden * act
    if train.gradient_checkpointing:
        return {"activations": int(model.layers * t * model.hidden * device.residual_bytes + shared),
                "attention_masks": 0}
    per_layer = layer_activation_bytes_per_token(model, train, device) * t
    return {"activations": int(model.layers * per_layer + shared),
            "attention_masks": model.layers * float_mask_bytes(train, device)}


def float_mask_bytes(train: TrainShape, device: DeviceProfile) -> int:
    """One layer's additive T x T mask (SDPA converts the boolean one and saves the result for backward)."""
    return train.mask_elements * device.attention_mask_bytes if uses_mask(train) else 0


def transient_peak_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> tuple[str, int]:
    """The largest short-lived allocation on top of the saved activations, and its name.

    Backward starts with the LM head (its tiles, while every activation is alive); then layer by layer, each
    needing its weight dequantized and its activation gradients, and, with checkpointing, its recomputed
    activations and float mask. These happen one after the other, so the peak takes the largest, not the sum."""
    candidates = {"lm_head_tiles": lm_head_bytes(model, train, device)}
    layer = backward_transient_bytes(model, train, device)
    if train.gradient_checkpointing:
        layer += int(layer_activation_bytes_per_token(model, train, device) * train.tokens
                     + float_mask_bytes(train, device))
        candidates["recomputed_layer"] = layer
    else:
        candidates["layer_backward"] = layer
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


def lm_head_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """The loss. TRL >= 1.x SFTTrainer uses a fused, chunked LM head: logits are never [T, V]; tiles of
    [min(T, 4096), min(V, 32768)] are projected, folded into log-softmax statistics and dropped, in forward and
    again in backward. The torch fallback (CPU) keeps ~8 tile-sized fp32 temporaries alive at once.

    Unfused (plain `logits = lm_head(h); cross_entropy`), it is T x V fp32 logits + the saved log-softmax + its
    gradient: ~3 x T x V x 4 bytes, which is what dominates big-vocabulary models."""
    if not train.fused_lm_head:
        return 3 * train.tokens * model.vocab * 4
    tile = min(train.tokens, LM_HEAD_TOKEN_TILE) * min(model.vocab, LM_HEAD_VOCAB_TILE) * 4
    return int(device.lm_head_tile_copies * tile)


def backward_transient_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """While a layer runs backward: bitsandbytes dequantizes one weight to the compute dtype for grad_input, and the
    activation gradients of the MLP (a few T x intermediate) are alive. Small next to the LM-head tiles, but it is
    what remains of the peak when checkpointing recomputes a layer."""
    largest_linear = max(a * b for a, b in model.linear_shapes().values())
    return int(largest_linear * device.compute_bytes + 3 * train.tokens * model.intermediate * device.compute_bytes)


# ------------------------------------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Estimate:
    static: dict[str, int]
    dynamic: dict[str, int]
    allocator_factor: float
    load_peak: int
    host_only: dict[str, int] = field(default_factory=dict)

    @property
    def dynamic_total(self) -> int:
        return sum(self.dynamic.values())

    @property
    def train_peak(self) -> int:
        return sum(self.static.values()) + int(self.allocator_factor * self.dynamic_total)

    @property
    def peak(self) -> int:
        return max(self.load_peak, self.train_peak)

    def breakdown(self) -> dict[str, int]:
        """Every component in bytes; the dynamic ones already scaled by the allocator factor."""
        parts = dict(self.static)
        parts.update({k: int(v * self.allocator_factor) for k, v in self.dynamic.items()})
        return parts

    def table(self) -> str:
        rows = [f"{name:22s} {value / MiB:10.1f} MiB" for name, value in self.breakdown().items()]
        rows.append(f"{'train peak':22s} {self.train_peak / MiB:10.1f} MiB")
        rows.append(f"{'load peak':22s} {self.load_peak / MiB:10.1f} MiB")
        rows.append(f"{'PEAK':22s} {self.peak / MiB:10.1f} MiB")
        return "\n".join(rows)


def estimate(model: ModelShape, train: TrainShape, device: DeviceProfile = CPU) -> Estimate:
    """Peak memory of one training process for `train` on `model` on `device`."""
    n_lora = lora_params(model, train)
    weights = weight_bytes(model, train, device)
    opt_device, opt_host = optimizer_bytes(n_lora, train, device)
    quantized_source = model.quantized_params * model.checkpoint_dtype_bytes
    static = {
        "framework": device.framework_bytes,
        "training_runtime": device.training_runtime_bytes,
        "load_retained": int(device.load_retained_fraction * quantized_source),
        **weights,
        "lora_params": n_lora * device.lora_bytes,
        "lora_grads": n_lora * device.lora_bytes,
        "optimizer_states": opt_device,
    }
    transient_name, transient = transient_peak_bytes(model, train, device)
    dynamic = {**activation_bytes(model, train, device), transient_name: transient}
    factor = device.allocator_factor_checkpointing if train.gradient_checkpointing else device.allocator_factor
    return Estimate(static=static, dynamic=dynamic, allocator_factor=factor,
                    load_peak=load_peak_bytes(model, train, device), host_only={"optimizer_states": opt_host})


def load_peak_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """Loading: the framework, the checkpoint's pages (mmapped; on CPU they stay resident), the quantized result and
    what the quantizer's temporaries leave in the allocator. The bound only when T is tiny."""
    weights = weight_bytes(model, train, device)
    source = model.checkpoint_bytes or model.total_params * model.checkpoint_dtype_bytes
    retained = device.load_retained_fraction * model.quantized_params * model.checkpoint_dtype_bytes
    return int(device.framework_bytes + (source if device.maps_checkpoint else 0) + weights["quantized_weights"]
               + weights["unquantized_weights"] + retained)


