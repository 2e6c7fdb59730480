"""The adapter that trains: a new LoRA as the spec says, or the one a job continues (its own adapter_config.json).

A job that starts from `init_adapter` trains that adapter, with its own rank, targets and variant; the spec's LoRA
fields are not used (TrainSpec.init_adapter says so). Whatever reads the settings (the estimate above all) must see
the adapter that actually trains, so both are read into the same `LoraSettings`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jobs.spec import CONVERTED_INITS, TrainSpec

ALL_LINEAR = "all-linear"
OUTPUT_HEAD = "lm_head"
NO_LORA_ON_THE_HEAD = (
    "LoRA cannot adapt lm_head here: TRL's trainers compute the loss from lm_head.weight directly (their fused LM "
    "head), so an adapter on it would never train and the trainer refuses it. Train the head in full instead "
    "(modules_to_save ['lm_head']), or adapt the embeddings alone (['embed_tokens']).")

LOFTQ_NEEDS_CUDA = (
    "init_lora_weights 'loftq' needs a CUDA worker: PEFT's replace_lora_weights_loftq computes on 'cuda' (or "
    "'xpu') whatever device the model is on, so it cannot run on a CPU worker. Run the job on a GPU worker's pool, "
    "or use init_lora_weights 'default'.")


@dataclass(frozen=True)
class LoraSettings:
    """peft's LoraConfig fields, as the run trains them."""

    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...] | str
    """Module names, or peft's 'all-linear'."""
    bias: str = "none"
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: tuple[str, ...] = ()
    init: str = "default"
    """The spec's init_lora_weights ('default', 'gaussian', 'pissa', 'olora', 'loftq'); 'pissa_niter_N' for PiSSA's
    fast SVD. A continued or converted adapter's config says 'default' (PEFT writes True once converted)."""
    task_type: str = "CAUSAL_LM"
    """peft's task type: SEQ_CLS for a reward model (peft then trains and saves its score head, modules_to_save)."""

    @classmethod
    def from_spec(cls, spec: TrainSpec) -> LoraSettings:
        targets = spec.target_module_names()
        return cls(r=spec.lora_r, alpha=spec.lora_alpha, dropout=spec.lora_dropout,
                   target_modules=targets if isinstance(targets, str) else tuple(targets), bias=spec.lora_bias,
                   use_rslora=spec.use_rslora, use_dora=spec.use_dora, modules_to_save=tuple(spec.modules_to_save),
                   init=peft_init_name(spec.init_lora_weights, spec.pissa_niter))

    @classmethod
    def from_adapter_config(cls, config: dict) -> LoraSettings:
        """From a PEFT adapter_config.json's fields (peft writes the matched module names, or 'all-linear')."""
        targets = config.get("target_modules") or ALL_LINEAR
        return cls(r=int(config["r"]), alpha=float(config.get("lora_alpha", 8)),
                   dropout=float(config.get("lora_dropout", 0.0)),
                   target_modules=targets if isinstance(targets, str) else tuple(sorted(targets)),
                   bias=config.get("bias", "none"), use_rslora=bool(config.get("use_rslora", False)),
                   use_dora=bool(config.get("use_dora", False)),
                   modules_to_save=tuple(config.get("modules_to_save") or ()),
                   init=_config_init(config.get("init_lora_weights", True)),
                   task_type=str(config.get("task_type") or "CAUSAL_LM"))

    @property
    def converted(self) -> bool:
        """PiSSA and OLoRA take their start out of the base's weights: the adapter is saved converted to apply to the
        original base (jobs.training.lora_init)."""
        return self.init.startswith(CONVERTED_INITS)

    @property
    def loftq(self) -> bool:
        """LoftQ: a default LoRA whose A and B are then replaced by PEFT's replace_lora_weights_loftq (4-bit base)."""
        return self.init == "loftq"

    def peft_kwargs(self) -> dict:
        """The keyword arguments of peft's LoraConfig (plain values: the generated script prints them)."""
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": (self.target_modules if isinstance(self.target_modules, str)
                                   else list(self.target_modules)),
                "bias": self.bias, "use_rslora": self.use_rslora, "use_dora": self.use_dora,
                "modules_to_save": list(self.modules_to_save) or None, "task_type": self.task_type,
                # LoftQ's start comes after the LoRA is built (replace_lora_weights_loftq); PEFT's default until then.
                "init_lora_weights": True if self.init in ("default", "loftq") else self.init}


def peft_init_name(init: str, pissa_niter: int = 0) -> str:
    """The spec's init as PEFT names it: PiSSA with N fast-SVD iterations is 'pissa_niter_N'."""
    return f"pissa_niter_{pissa_niter}" if init == "pissa" and pissa_niter else init


def _config_init(value: object) -> str:
    # PEFT writes True for its default (and for an adapter converted from PiSSA or OLoRA), or the init's name.
    known = isinstance(value, str) and (value in ("gaussian", "olora", "loftq") or value.startswith("pissa"))
    return value if known else "default"


def read_adapter_lora(adapter_dir: str | Path) -> LoraSettings:
    """The LoRA an adapter folder holds, from its adapter_config.json (no weights read). Raises OSError or
    ValueError when the folder has no readable config."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if not isinstance(config, dict) or "r" not in config:
        raise ValueError(f"{adapter_dir}: adapter_config.json is not a LoRA adapter's config")
    return LoraSettings.from_adapter_config(config)


def lora_target_problem(lora: LoraSettings) -> str | None:
    """Why the trainers cannot train this LoRA, or None."""
    targets = () if isinstance(lora.target_modules, str) else lora.target_modules
    if any(name.rsplit(".", 1)[-1] == OUTPUT_HEAD for name in targets):
        return NO_LORA_ON_THE_HEAD
    return None
