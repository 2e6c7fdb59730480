"""What a user reads when a job fails: one home for every failure text, whether the training code raised
(`explain_failure`, in the child) or the child process died without saying why (`explain_exit`, in the worker).

Each text starts with a sentence a person can act on and keeps the original error at the end."""

from __future__ import annotations

import signal


def is_out_of_memory(error: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError by name: this module is imported where torch must not be.
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


def explain_failure(error: BaseException) -> str:
    """A message a user can act on for an exception raised while training, with the error kept at the end."""
    text = f"{type(error).__name__}: {error}"
    message = str(error)
    if type(error).__name__ == "StoredSpecError":  # jobs.spec_store: its text already says what to do
        return f"{message} Clone the run into the Train form to fix it and submit it again."
    if type(error).__name__ == "ExportError":  # jobs.training.gguf: names what the converter cannot carry
        return f"The GGUF export was refused: {message}\n\nNothing was written."
    if type(error).__name__ == "LoraInitError":  # jobs.training.lora_init: says where the start can run
        return f"{message}\n\nNothing was trained."
    if type(error).__name__ == "RewardError":  # jobs.rewards: a person's reward function returned the wrong thing
        return (f"The reward function failed: {message}. Fix grpo_reward_code and submit again; its traceback is "
                f"in the log.\n\n{text}")
    if is_out_of_memory(error):
        return ("Out of memory while training. Lower batch_size or max_length, use gradient_checkpointing "
                f"'on', or a smaller base model.\n\n{text}")
    if isinstance(error, OSError) and ("couldn't connect" in message or "offline mode" in message):
        return ("Could not download the base model: the Hugging Face hub is unreachable from this machine and "
                "the model is not in the local cache. Use a local directory with safetensors weights, or run on a "
                f"machine with internet.\n\n{text}")
    if isinstance(error, OSError) and ("does not appear to have" in message or "not found" in message):
        return f"Could not load the base model or its tokenizer.\n\n{text}"
    return f"Training failed.\n\n{text}"


def explain_exit(returncode: int | None, log_tail: str) -> str:
    """A message for a training process that ended without writing its own explanation."""
    if returncode is not None and returncode < 0:
        how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with {returncode}"
    if returncode == -signal.SIGKILL:
        how += " (often the kernel's out-of-memory killer: lower batch_size or max_length)"
    return f"The training process {how}. Last log lines:\n{log_tail}"
