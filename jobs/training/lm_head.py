"""The loss head on a CPU: project through the LM head only the positions that carry a label.

TRL's SFTTrainer trains through its fused LM head (`trl.trainer.utils.add_fused_lm_head`), which never builds the
(tokens × vocabulary) logits. On a Triton device it scores only the positions whose next-token label is not -100;
everywhere else it scores every position, because on XLA devices (Neuron) a changing number of positions would
recompile the graph. A CPU runs eagerly and recompiles nothing, so there the compact path is pure gain: with the loss
on assistant tokens, the prompts' positions cost a 49,152-wide projection and softmax each on SmolLM2 for nothing.
Measured on the 2-core CPU machine (bench/lm_head.py, docs/benchmarks.md): a SmolLM2-135M forward + backward of one
504-token packed row, 205 positions labelled, took 3.03 s scoring every position and 2.39 s scoring the labelled
ones, with the same loss.

The switch is TRL's own decision function, swapped in its module for one that also answers yes for a CPU. Its
kernels keep their own (unchanged) choice of Triton or torch tiles. tests/jobs/training/test_lm_head.py checks the
loss and gradients equal TRL's unpatched path and that only labelled rows reach the head, so a TRL upgrade that
moves the decision fails there, not silently."""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils
from trl.kernels.chunked_logprob import _use_triton as _tiles_on_triton


def _compact_on_cpu_too(device: torch.device) -> bool:
    return device.type == "cpu" or _tiles_on_triton(device)


def score_only_labelled_positions() -> None:
    """From now on, in this process, TRL's fused LM head skips the positions without a label on a CPU as it does
    on a GPU. Idempotent."""
    trl_utils._use_triton = _compact_on_cpu_too


def scores_only_labelled_positions(device: torch.device) -> bool:
    """Whether TRL's fused LM head scores only labelled positions on `device` now."""
    return trl_utils._use_triton(device)
