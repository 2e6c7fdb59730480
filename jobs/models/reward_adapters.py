"""What a reward adapter is and where it goes (issue 31, reward-model training).

A reward adapter (method "reward", jobs.training.reward) is a LoRA of peft's SEQ_CLS task with a trained score head:
it gives a conversation one number and generates nothing. It is told from its own folder (its adapter_config.json's
task_type), so an uploaded one is recognised too. Chat panes, /v1, merge and GGUF export refuse it in these words;
the eval job scores it on pairs (jobs.evaluate.reward_scores)."""

from __future__ import annotations

import json
from pathlib import Path

REWARD_TASK_TYPE = "SEQ_CLS"


def is_reward_adapter(adapter_dir: Path) -> bool:
    """The folder holds a reward model's adapter (a sequence classifier's LoRA), not a generating one."""
    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("task_type") == REWARD_TASK_TYPE


def reward_refusal(name: str, action: str) -> str:
    """Why `action` (chat with it, merge it, export it to GGUF) cannot take the reward adapter `name`."""
    return (f"'{name}' is a reward model: it scores answers with one number and does not generate text, so it "
            f"cannot be used to {action}; evaluate it on preference pairs instead (its pairwise accuracy and margin)")
