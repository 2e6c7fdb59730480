"""Early stopping and the best adapter: at every eval, the adapter with the lowest eval loss so far is kept beside
the run (a small LoRA save, independent of the checkpoint schedule), and the run stops once eval loss has not
improved for `patience` evals in a row. At the end the kept weights, not the last step's, become the adapter.

The record follows the checkpoints: `best/record.json` is the live one, and each checkpoint keeps a copy of it as
it was at that step, so a resumed run counts exactly as an uninterrupted one would."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import TrainerCallback

from jobs.training.distributed import is_main
from storage.file_modes import open_to_allowed_readers

BEST_DIR = "best"
RECORD = "record.json"
CHECKPOINT_RECORD = "best-record.json"
WEIGHTS = "adapter_model.safetensors"


@dataclass
class BestRecord:
    step: int = -1
    eval_loss: float = float("inf")
    evals_since: int = 0
    stopped_early: bool = False

    @classmethod
    def read(cls, run_dir: Path) -> BestRecord:
        return cls.read_file(run_dir / BEST_DIR / RECORD)

    @classmethod
    def read_file(cls, path: Path) -> BestRecord:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return cls()

    def write(self, run_dir: Path) -> None:
        self.write_file(run_dir / BEST_DIR / RECORD)

    def write_file(self, target: Path) -> None:
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self)))
        os.replace(partial, target)


class BestAdapterCallback(TrainerCallback):
    """Keeps the lowest-eval-loss adapter (`keep_best`) and stops after `patience` evals without improvement
    (0: never)."""

    def __init__(self, run_dir: Path, patience: int, keep_best: bool) -> None:
        self.run_dir, self.patience, self.keep_best = run_dir, patience, keep_best
        (run_dir / BEST_DIR).mkdir(parents=True, exist_ok=True)
        self.record = BestRecord()  # train() sets it from the checkpoint it resumes, if any

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or state.global_step == self.record.step:
            return control
        if loss < self.record.eval_loss:
            if self.keep_best and model is not None and is_main():
                self._save(model)
            self.record = BestRecord(step=state.global_step, eval_loss=float(loss))
        else:
            self.record.evals_since += 1
            ending = state.max_steps and state.global_step >= state.max_steps  # the last eval stops nothing
            if self.patience and self.record.evals_since >= self.patience and not ending:
                self.record.stopped_early = True
                control.should_training_stop = True
                print(f"stopping early at step {state.global_step}: eval loss has not improved for "
                      f"{self.record.evals_since} evals (best {self.record.eval_loss:.4f} at step "
                      f"{self.record.step})", flush=True)
        if is_main():  # the ranks see the same (gathered) eval loss and decide alike; one of them writes
            self.record.write(self.run_dir)
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if is_main() and checkpoint.is_dir():  # before the completion marker is written (this callback comes first)
            self.record.write_file(checkpoint / CHECKPOINT_RECORD)
        return control

    def resume(self, checkpoint: Path) -> None:
        """Continue counting from the record as it was when `checkpoint` was saved."""
        self.record = BestRecord.read_file(checkpoint / CHECKPOINT_RECORD)
        self.record.write(self.run_dir)

    def resume_fresh(self) -> None:
        """No checkpoint to resume: whatever an earlier attempt recorded is void."""
        self.record = BestRecord()
        self.record.write(self.run_dir)

    def _save(self, model) -> None:
        partial, final = self.run_dir / BEST_DIR / "adapter.partial", self.run_dir / BEST_DIR / "adapter"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, safe_serialization=True, selected_adapters=[model.active_adapter])
        open_to_allowed_readers(partial)  # safetensors writes 0600 whatever the data dir's modes allow
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)


def restore_best(model, run_dir: Path, record: BestRecord) -> bool:
    """Load the weights kept for `record` into `model`; False when there are none to load."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = run_dir / BEST_DIR / "adapter" / WEIGHTS
    if record.step < 0 or not weights.is_file():
        return False
    set_peft_model_state_dict(model, load_file(weights), adapter_name=model.active_adapter)
    return True
