"""Peak-memory estimator for QLoRA training (the studio's `train()`: bitsandbytes 4-bit base, LoRA or DoRA, TRL's
SFTTrainer with padding-free packing, a preference trainer with padded rows: DPO, ORPO and SimPO pairs, KTO's
answers; or GRPOTrainer with num_generations padded answers per prompt; AdamW), for any decoder family.

Pure Python, no torch: the inputs are numbers from a model's config.json and its safetensors headers
(jobs/models/shape.py: the family's own Linears, norms and attention kind), the training spec, and a `DeviceProfile`
(constants measured once per device type). The result is a breakdown in bytes, so the UI can say *what* the memory
goes to; CPU (peak RSS) and CUDA (peak reserved + context) share the formula and differ in their profiles.

The formula (T = tokens in one micro-batch: padding-free packing concatenates batch_size sequences of up to
max_length tokens into ONE row, so T <= batch_size * max_length; DPO, ORPO and SimPO pad 2 x batch_size sequences,
chosen and rejected, to the batch's longest, so T = 2 * batch_size * min(longest pair, max_length); KTO pads
batch_size answers (its KL and reference passes run without gradients); GRPO pads batch_size x num_generations
answers of a prompt plus max_completion_length tokens, so T = batch_size * num_generations * min(longest row +
max_completion_length, max_length), its reference pass only with beta > 0, and its sampling keeps 2 * n * kv_dim * a
bytes of KV cache per token of the generation batch (batch x num_generations x grad_accum); n layers, hidden h,
intermediate I, H heads of d, vocab V, LoRA rank r, a = activation bytes, m = dropout-mask bytes, M = additive-mask
bytes; sums run over the family's own Linears):

    peak       = max(load_peak, train_peak)
    load_peak  = loading's peak + a PiSSA / OLoRA / LoftQ start's fp32 temporaries of the largest adapted weight
    train_peak = static + f_alloc * dynamic
    static     = framework + runtime + load_retained + checkpoint_mmap + W_4bit + W_unquantized
                 + P_lora * lora_bytes + P_trained * (lora_bytes + optimizer bytes per param)
                 + modules_to_save copies * lora_bytes + DPO's or KTO's frozen copy of a starting adapter
                 + GRPO's reward model: a second W_4bit + W_unquantized with the reward adapter
                 (load_retained and checkpoint_mmap are 0 where the run releases them after loading, as a CPU
                 run of a quantized base does, RunSettings.releases_checkpoint; W_unquantized is then a copy)
    W_4bit     = sum over Linears (d_in * d_out) * 4.127 / 8      (4.5 / 8 without double quant; blocksize 64)
    P_lora     = r * sum over targets (d_in + d_out) [+ d_out each with DoRA]; an embedding: r * (V + h)
    P_trained  = P_lora + modules_to_save copies + trained biases
    dynamic    = activations + attention_masks [+ attention_scores] [+ DoRA's saved weights]
                 + max(lm_head_tiles, layer_backward | recomputed layer, DPO's or KTO's reference
                       pass, DoRA's weight norm, GRPO's generation KV cache, its reward model's scoring pass)
    activations (no checkpointing) = n * T * A_token + shared(T)
    A_token    = norms * (4h + 4)                                  norm inputs (fp32) + rsqrt (2 or 4 per layer)
               + sum over LoRA targets ((m + a) * d_in + a * r)  dropout mask + dropped input + lora_A output
               [+ 2 * a * d_out per target with DoRA]            the magnitude's two products
               + a * (2 * H * d + 2 * kv_saved) + 4 * H          SDPA q, k, v, out (+ logsumexp)
                 | a * 3 * H * d                                  eager: q, k and v repeated to every head
               + 3 * a * I                                       MLP: gate, act(gate), up (fused or not)
    attention_masks  = n * M * T^2                              SDPA saves a float T x T mask per layer
    attention_scores = n * H * T^2 * (4 [+ a with soft-capping]) eager attention's probabilities (Gemma 2)
    lm_head_tiles    = c_tile * min(T, 4096) * min(V, 32768) * 4  TRL's fused, chunked LM head (no T x V logits)
                     | 3 * T * V * 4                             ORPO, SimPO: TRL's experimental trainers' full logits
                     | T * 4                                     reward: a score per token, read at the last one
    with checkpointing: activations = n * T * h * a + shared; one layer (T * A_token + M * T^2) is recomputed at a
    time during backward and competes with the LM-head tiles for the transient slot.

The peak is at the start of backward: every saved activation is alive and the LM head's backward runs; later
transients (a layer's backward, its recomputation, DPO's no-grad reference pass before it) come one after another,
hence the max. Checked against real runs of SFT and DPO in every variant and family (docs/benchmarks.md); ORPO, SimPO
and KTO follow the same terms, not yet measured against runs of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from jobs.models.memory_inputs import (
    ALL_LINEAR,
    BNB_BLOCKSIZE,
    BNB_NESTED_BLOCKSIZE,
    CPU,
    INPUT_OF,
    LM_HEAD_TOKEN_TILE,
    LM_HEAD_VOCAB_TILE,
    DeviceProfile,
    Linear,
    MiB,
    ModelShape,
    TrainShape,
)
from jobs.models.shape import EMBEDDINGS, OUTPUT


def adapted(model: ModelShape, train: TrainShape) -> tuple[list[Linear], list[str]]:
    """(the decoder Linears LoRA adapts, the other modules it adapts: embed_tokens and/or lm_head). Names are
    matched as peft matches them, by their last part, against the model's own modules (Phi-3's qkv_proj, not q_proj)."""
    if train.target_modules == ALL_LINEAR:
        return list(model.decoder_linears), []
    linears: dict[str, Linear] = {}
    others: list[str] = []
    for name in train.target_modules:
        leaf = name.rsplit(".", 1)[-1]
        linear = model.linear(leaf)
        if linear is not None:
            linears[leaf] = linear
        elif (leaf in EMBEDDINGS or leaf in OUTPUT) and leaf not in others:
            others.append(leaf)
    return list(linears.values()), others


def lora_params(model: ModelShape, train: TrainShape) -> int:
    """r * (in + out) per adapted Linear (A is r x in, B is out x r); an adapted embedding is r x vocab and
    hidden x r. DoRA adds a magnitude per output of each."""
    linears, others = adapted(model, train)
    count = sum(linear.layers * train.lora_r * (linear.d_in + linear.d_out) for linear in linears)
    count += len(others) * train.lora_r * (model.vocab + model.hidden)
    if train.use_dora:
        count += sum(linear.layers * linear.d_out for linear in linears)
        count += sum(model.hidden if name in EMBEDDINGS else model.vocab for name in others)
    return count


def saved_module_params(model: ModelShape, train: TrainShape) -> int:
    """modules_to_save: peft trains a full copy of each (the frozen original stays)."""
    return sum(model.module_params(name) for name in train.modules_to_save)


def trained_bias_params(model: ModelShape, train: TrainShape) -> int:
    """lora_bias: the model's own biases made trainable (no copy: a gradient and optimizer states each)."""
    if train.trainable_biases == "none":
        return 0
    linears = model.decoder_linears if train.trainable_biases == "all" else adapted(model, train)[0]
    return sum(linear.layers * linear.d_out for linear in linears if linear.bias)


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

    peft's prepare_model_for_kbit_training casts every unquantized fp16/bf16 parameter to fp32, so those take 4
    bytes each, not the load dtype's 2, unless the run casts them back (bf16: TrainShape.upcast_unquantized). On CPU
    (fp32 load of an fp32 checkpoint) they are zero-copy views of the mmapped file, counted in `checkpoint_mmap`
    instead, unless the run releases the checkpoint."""
    if train.quantization == "none":
        quantized = model.quantized_params * device.compute_bytes
    else:
        quantized = int(model.quantized_params * quantized_bits_per_param(train) / 8)
    zero_copy = device.maps_checkpoint and model.checkpoint_dtype_bytes == device.compute_bytes
    mapped = zero_copy and not train.releases_checkpoint  # released: copied out, the file unmapped
    mmap = model.checkpoint_bytes or model.total_params * model.checkpoint_dtype_bytes
    return {"quantized_weights": quantized,
            "unquantized_weights": 0 if mapped else model.unquantized_params * unquantized_bytes(train, device),
            "checkpoint_mmap": mmap if mapped else 0}


def unquantized_bytes(train: TrainShape, device: DeviceProfile) -> int:
    """Bytes a parameter of the base's embeddings and norms, and with them an element of the residual stream, takes
    in training: fp32 where peft's upcast stays (the profile's residual_bytes), else the compute dtype's."""
    return device.residual_bytes if train.upcast_unquantized else device.compute_bytes


def optimizer_bytes(n_params: int, train: TrainShape, device: DeviceProfile) -> tuple[int, int]:
    """(device bytes, host bytes) of the optimizer states. torch AdamW keeps exp_avg and exp_avg_sq in the
    parameter's dtype; bitsandbytes 8-bit Adam keeps 1 byte each (+ block scales); paged optimizers live in
    unified memory and are evicted to the host under pressure (counted on the host here)."""
    per_param = 2 * (1 + 4 / 2048) if "8bit" in train.optimizer else 2 * device.lora_bytes
    states = int(n_params * per_param)
    return (0, states) if train.optimizer.startswith("paged") else (states, 0)


def layer_activation_bytes_per_token(model: ModelShape, train: TrainShape, device: DeviceProfile) -> float:
    """Bytes saved for backward per token in one decoder layer (without the T x T terms), as autograd keeps them.

    Counted from what each op saves (verified with a saved-tensor hook on SmolLM2 and the demo model):
      - each norm: its fp32 input and the per-token rsqrt (the weight is frozen, so the output is not saved);
      - each LoRA'd Linear with dropout: the dropout mask and the dropped input (each module has its own, even where
        q/k/v share an input), and lora_A's output (r) for lora_B. Without dropout, modules sharing an input share it;
      - DoRA: its magnitude multiplies the base output and the LoRA output, and keeps both (2 x out);
      - the 4-bit base Linear saves nothing but its packed weight (frozen), so inputs of non-LoRA Linears are free;
      - attention (SDPA): q, k, v (k/v repeated to all heads when a mask is given, since GQA then falls back to
        repeat_kv), the output and a per-head logsumexp; RoPE saves only the shared cos/sin. Eager attention keeps
        q and k, v repeated to all heads (its T x T probabilities are counted apart);
      - MLP: gate output (for the activation), the activation's output and up output (for the product): 3 x
        intermediate, whether gate and up are two Linears or one fused gate_up_proj.
    """
    act, h, i = device.compute_bytes, model.hidden, model.intermediate
    norms = model.layer_norms * (h * device.norm_bytes + 4)
    linears, _ = adapted(model, train)

    def share(linear: Linear) -> float:
        # A Linear some layers lack counts for its share of them; experts count once (a token visits a few of them)
        return min(1.0, linear.layers / model.layers)

    if train.lora_dropout > 0:
        lora = sum(share(m) * ((device.dropout_mask_bytes + act) * m.d_in + act * train.lora_r) for m in linears)
    else:  # nn.Identity: lora_A saves the input itself, shared by the modules that read the same tensor
        inputs = {INPUT_OF.get(m.name, m.name): share(m) * m.d_in for m in linears}
        lora = act * (sum(inputs.values()) + train.lora_r * sum(share(m) for m in linears))
    if train.use_dora:
        lora += sum(share(m) * 2 * act * m.d_out for m in linears)
    if model.eager_attention:
        attention = act * (model.q_dim + 2 * model.q_dim)
    else:
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


def attention_score_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """Eager attention's T x T tensors per layer, per head: the softmax's fp32 probabilities (and their cast to the
    compute dtype, when that is not fp32), and with soft-capping the tanh's output. SDPA keeps none."""
    if not model.eager_attention:
        return 0
    per_element = 4 + (device.compute_bytes if device.compute_bytes != 4 else 0)
    per_element += device.compute_bytes if model.attention_softcap else 0
    return model.heads * train.mask_elements * per_element


def activation_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> dict[str, int]:
    """Saved-for-backward memory when backward starts, plus the shared inputs (cos/sin, the boolean mask, the
    embedding output, final norm and the LM head's input).

    Without checkpointing every layer keeps its activations and its own float copy of the T x T mask (SDPA), or its
    attention probabilities (eager, which shares one additive mask per kind across layers). With checkpointing
    (transformers 5: non-reentrant) each layer keeps only its input (T x hidden); the layer recomputed during
    backward is counted in `transient_peak`."""
    t, act = train.tokens, device.compute_bytes
    masks = train.mask_elements * (model.mask_kinds * act if model.eager_attention else 1) if uses_mask(train) else 0
    shared = masks + 2 * t * model.dim_per_head * act + 3 * t * model.hidden * act
    if train.gradient_checkpointing:
        parts = {"activations": int(model.layers * t * model.hidden * unquantized_bytes(train, device) + shared),
                 "attention_masks": 0}
    else:
        per_layer = layer_activation_bytes_per_token(model, train, device) * t
        parts = {"activations": int(model.layers * per_layer + shared),
                 "attention_masks": model.layers * float_mask_bytes(model, train, device)}
        if model.eager_attention:
            parts["attention_scores"] = model.layers * attention_score_bytes(model, train, device)
    if train.use_dora and train.lora_dropout > 0:
        parts["dora_weights"] = dora_saved_weight_bytes(model, train, device)
    return parts


def dora_saved_weight_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """DoRA with dropout recomputes the base output from the dropped input through the dequantized weight, and
    autograd keeps that weight (in the compute dtype) for backward: a full copy of every adapted Linear, alive until
    its layer's backward."""
    return sum(linear.params for linear in adapted(model, train)[0]) * device.compute_bytes


def float_mask_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """One layer's additive T x T mask: SDPA converts the boolean one and saves the result for backward (eager
    attention adds one shared mask instead)."""
    if model.eager_attention or not uses_mask(train):
        return 0
    return train.mask_elements * device.attention_mask_bytes


def transient_peak_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> tuple[str, int]:
    """The largest short-lived allocation on top of the saved activations, and its name.

    Backward starts with the LM head (its tiles, while every activation is alive); then layer by layer, each
    needing its weight dequantized and its activation gradients, and, with checkpointing, its recomputed
    activations and float mask. DPO's reference pass (no grad) runs one layer at a time while the policy's
    activations are alive. These happen one after the other, so the peak takes the largest, not the sum."""
    candidates = {"lm_head_tiles": lm_head_bytes(model, train, device)}
    one_layer = int(layer_activation_bytes_per_token(model, train, device) * train.tokens
                    + float_mask_bytes(model, train, device) + attention_score_bytes(model, train, device))
    layer = backward_transient_bytes(model, train, device)
    if train.gradient_checkpointing:
        candidates["recomputed_layer"] = layer + one_layer
    else:
        candidates["layer_backward"] = layer
    if train.preference:
        candidates["reference_pass"] = one_layer
    if train.use_dora:
        candidates["dora_weight_norm"] = dora_norm_bytes(model, train, device)
    if train.generation_sequences:
        candidates["generation_kv_cache"] = generation_bytes(model, train, device)
    if train.reward_model:  # the reward copy scores prompt + answer of the whole generation batch, one layer at a time
        candidates["reward_pass"] = int(layer_activation_bytes_per_token(model, train, device)
                                        * train.generation_sequences * train.sequence_length)
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


def generation_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """GRPO samples its answers before the step: every sequence of the generation batch keeps keys and values of
    every layer for up to its full length, and each new token's logits are [sequences, V] in fp32. Counted with the
    transients (a bound: sampling has ended before the step's activations exist)."""
    tokens = train.generation_sequences * train.sequence_length
    kv_cache = 2 * model.layers * model.kv_dim * tokens * device.compute_bytes
    return int(kv_cache + 2 * train.generation_sequences * model.vocab * 4)


def dora_norm_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """Each DoRA forward rebuilds its weight's column norms: the LoRA product through an in x in identity, the
    dequantized weight, their sum; one Linear at a time."""
    linears = adapted(model, train)[0]
    return max((m.d_in * m.d_in * device.lora_bytes + m.d_in * m.d_out * (device.lora_bytes + 2 * device.compute_bytes)
                for m in linears), default=0)


def lm_head_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """The loss. TRL >= 1.x uses a fused, chunked LM head: logits are never [T, V]; tiles of
    [min(T, 4096), min(V, 32768)] are projected, folded into log-softmax statistics and dropped, in forward and
    again in backward. The torch fallback (CPU) keeps ~8 tile-sized fp32 temporaries alive at once.

    Unfused (plain `logits = lm_head(h); cross_entropy`), it is T x V fp32 logits + the saved log-softmax + its
    gradient: ~3 x T x V x 4 bytes, which is what dominates big-vocabulary models. A reward model has none: its
    score head gives each sequence one number (T x 1)."""
    if not train.lm_head:
        return train.tokens * 4
    if not train.fused_lm_head:
        return 3 * train.tokens * model.vocab * 4
    tile = min(train.tokens, LM_HEAD_TOKEN_TILE) * min(model.vocab, LM_HEAD_VOCAB_TILE) * 4
    return int(device.lm_head_tile_copies * tile)


def backward_transient_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """While a layer runs backward: bitsandbytes dequantizes one weight to the compute dtype for grad_input, and the
    activation gradients of the MLP (a few T x intermediate) are alive. Small next to the LM-head tiles, but it is
    what remains of the peak when checkpointing recomputes a layer."""
    largest_linear = max(m.d_in * m.d_out for m in model.decoder_linears)
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


def whole_model_trained_params(model: ModelShape, train: TrainShape) -> int:
    """Parameters a full or freeze run trains: all of them; or the last N blocks' Linears and norms, with the final
    norm and output head (tied: the embeddings) when the head trains."""
    if train.finetuning == "full":
        return model.total_params
    blocks = min(train.trainable_layers, model.layers)
    per_block = (model.linear_params_per_layer
                 + sum(linear.d_out for linear in model.decoder_linears if linear.bias)
                 + model.layer_norms * model.hidden)
    head = (model.lm_head_params or model.embedding_params) + model.hidden if train.train_head else 0
    return blocks * per_block + head


def whole_model_estimate(model: ModelShape, train: TrainShape, device: DeviceProfile) -> Estimate:
    """Full or freeze fine-tuning: every weight in fp32 (the master copy the optimizer updates; a GPU autocasts),
    a fp32 gradient and AdamW's two states (8-bit: about 2 bytes) per trained parameter, and the activations as a
    LoRA run on every Linear saves them (each Linear keeps its input for the weight's gradient either way)."""
    trained = whole_model_trained_params(model, train)
    opt_device, opt_host = optimizer_bytes(trained, train, replace(device, lora_bytes=4))
    static = {"framework": device.framework_bytes, "training_runtime": device.training_runtime_bytes,
              "model_weights": model.total_params * 4, "trained_grads": trained * 4, "optimizer_states": opt_device}
    activations = replace(train, finetuning="lora", target_modules=ALL_LINEAR, lora_dropout=0.0, use_dora=False)
    transient_name, transient = transient_peak_bytes(model, activations, device)
    dynamic = {**activation_bytes(model, activations, device), transient_name: transient}
    factor = device.allocator_factor_checkpointing if train.gradient_checkpointing else device.allocator_factor
    source = model.checkpoint_bytes or model.total_params * model.checkpoint_dtype_bytes
    load_peak = int(device.framework_bytes + (source if device.maps_checkpoint else 0) + model.total_params * 4)
    return Estimate(static=static, dynamic=dynamic, allocator_factor=factor, load_peak=load_peak,
                    host_only={"optimizer_states": opt_host})


def estimate(model: ModelShape, train: TrainShape, device: DeviceProfile = CPU) -> Estimate:
    """Peak memory of one training process for `train` on `model` on `device`."""
    if train.attention == "eager":  # asked for: counted as a family that can only run eager attention
        model, train = replace(model, eager_attention=True), replace(train, attention="sdpa")
    if train.finetuning != "lora":
        return whole_model_estimate(model, train, device)
    n_lora = lora_params(model, train)
    n_saved = saved_module_params(model, train)
    n_trained = n_lora + n_saved + trained_bias_params(model, train)
    weights = weight_bytes(model, train, device)
    opt_device, opt_host = optimizer_bytes(n_trained, train, device)
    quantized_source = model.quantized_params * model.checkpoint_dtype_bytes
    static = {
        "framework": device.framework_bytes,
        "training_runtime": device.training_runtime_bytes,
        "load_retained": 0 if train.releases_checkpoint else int(device.load_retained_fraction * quantized_source),
        **weights,
        "lora_params": n_lora * device.lora_bytes,
        "lora_grads": (n_trained - n_saved) * device.lora_bytes,
        "saved_modules": 2 * n_saved * device.lora_bytes,  # the trainable copy and its gradient
        "reference_adapter": n_lora * device.lora_bytes if train.reference_adapter else 0,
        "optimizer_states": opt_device,
        **({"reward_model": reward_model_bytes(model, train, device)} if train.reward_model else {}),
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
               + weights["unquantized_weights"] + retained + init_transient_bytes(model, train)
               + reward_model_bytes(model, train, device))


def reward_model_bytes(model: ModelShape, train: TrainShape, device: DeviceProfile) -> int:
    """GRPO's reward_model reward: a second copy of the frozen base, quantized as the run's (its unquantized weights
    too, unless they stay views of the mmapped checkpoint, whose pages both copies share), and the reward adapter,
    counted at the trained LoRA's size (its rank is its own: a small error either way). Its sequence classifier has no
    LM head, which is still counted for an untied base: a small over-estimate."""
    if not train.reward_model:
        return 0
    weights = weight_bytes(model, train, device)
    return weights["quantized_weights"] + weights["unquantized_weights"] + lora_params(model, train) * device.lora_bytes


INIT_TEMPORARIES = {"pissa": 4, "olora": 4, "loftq": 5}
"""fp32 matrices the size of one adapted weight that a start holds at once: PiSSA's SVD and OLoRA's QR a copy, two
factors and the residual; LoftQ also the weight read from the checkpoint. Fast-SVD PiSSA (pissa_niter_N): the copy
and the residual (its factors are rank r)."""


def init_transient_bytes(model: ModelShape, train: TrainShape) -> int:
    """PiSSA, OLoRA and LoftQ start from a decomposition of each adapted weight, one layer at a time, after loading:
    the temporaries of the largest one."""
    copies = 2 if train.lora_init.startswith("pissa_niter_") else INIT_TEMPORARIES.get(train.lora_init, 0)
    largest = max((linear.d_in * linear.d_out for linear in adapted(model, train)[0]), default=0)
    return copies * largest * 4


