"""What a training step keeps for backward, by shape and dtype, and how many token counts its packed batches take.

    python bench/saved_tensors.py [--model smollm2|demo] [--upcast] [--out bench/results/saved_tensors_smollm2.json]
                                  [--smoke]

The studio's own training path for the default job's work (the first 320 rows of the example file the studio ships
for the base, a spec naming nothing; the plan's batch, packing and max_length; the compute dtype `auto` picks here),
built by `prepare_run`. One forward pass of the first packed batch runs under a saved-tensor hook
(torch.autograd.graph.saved_tensors_hooks) that notes every tensor autograd keeps, by its storage (a storage kept
twice counts once; the model's parameters and buffers are not counted): the bytes by (shape, dtype), largest first.
`--upcast` casts the base's unquantized weights (embeddings, norms) to fp32 first, as peft's
prepare_model_for_kbit_training leaves them and as the studio ran every bf16 job before it cast them back
(RunSettings.upcasts_unquantized): the arm to compare with. Then the token counts (input widths) of one epoch's
batches, as the collator pads them (to RunSettings.pad_to_multiple_of) and unpadded: on a CPU computing in bf16 each
count is a new oneDNN matmul shape (bench/onednn_cache.py). No timing: the figures are bytes and counts."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import write_report  # noqa: E402
from bench.memory_breakdown import work_files  # noqa: E402


def build_run(model: str, work: Path, upcast: bool, smoke: bool):
    """The default job's prepared run (jobs.training.train.prepare_run), the unquantized weights in fp32 if `upcast`."""
    import torch

    from jobs.spec import parse_spec
    from jobs.training.train import prepare_run, quiet_libraries

    quiet_libraries()
    base, data = work_files(model, work)
    fields = {"sample_prompts": 0, "save_steps": 10**6, **({"max_length": 128} if smoke else {})}
    run = prepare_run(parse_spec(fields), work / "run", base, Path(data), lambda *a: None, lambda: False)
    if upcast:
        for param in run.trainer.model.parameters():
            if not param.requires_grad and param.dtype.is_floating_point and param.__class__.__name__ != "Params4bit":
                param.data = param.data.to(torch.float32)
    return run


def saved_by_shape(run) -> tuple[int, list[dict]]:
    """(bytes saved for backward by one forward pass of the first batch, the bytes by shape and dtype)."""
    import torch

    trainer = run.trainer
    model = trainer.model.train()
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, tuple[tuple, str, int]] = {}

    def note(tensor):
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in owned:
                seen.setdefault(storage.data_ptr(), (tuple(tensor.shape), str(tensor.dtype), storage.nbytes()))
        return tensor

    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.autograd.graph.saved_tensors_hooks(note, lambda tensor: tensor):
        trainer.compute_loss(model, batch)
    by_kind: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    for shape, dtype, nbytes in seen.values():
        by_kind[shape, dtype][0] += nbytes
        by_kind[shape, dtype][1] += 1
    rows = [{"shape": list(shape), "dtype": dtype, "mb": round(nbytes / 2**20, 2), "tensors": count}
            for (shape, dtype), (nbytes, count) in sorted(by_kind.items(), key=lambda item: -item[1][0])]
    return sum(nbytes for _, _, nbytes in seen.values()), rows


def token_counts(run) -> dict:
    """The distinct input widths of one epoch's batches (the packed rows in order, batch_size at a time), padded as
    the run pads them and unpadded."""
    trainer = run.trainer
    collator = trainer.data_collator
    plain = dataclasses.replace(collator, pad_to_multiple_of=None)  # TRL's collator, as the run built it
    padded, unpadded = collections.Counter(), collections.Counter()
    for rows in _row_batches(trainer.train_dataset, trainer.args.per_device_train_batch_size):
        padded[collator(rows)["input_ids"].shape[1]] += 1
        unpadded[plain(rows)["input_ids"].shape[1]] += 1
    real = sum(width * n for width, n in unpadded.items())
    return {"pad_to_multiple_of": getattr(collator, "pad_to_multiple_of", None), "batches": sum(padded.values()),
            "tokens": real, "pad_tokens": sum(width * n for width, n in padded.items()) - real,
            "padded_counts": len(padded), "unpadded_counts": len(unpadded),
            "padded": dict(sorted(padded.items())), "unpadded": dict(sorted(unpadded.items()))}


def _row_batches(dataset, size: int):
    rows = [dataset[i] for i in range(len(dataset))]
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "demo"], default="smollm2")
    parser.add_argument("--upcast", action="store_true", help="the unquantized weights in fp32, as before")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the demo model at max_length 128")
    args = parser.parse_args()
    model = "demo" if args.smoke else args.model
    with tempfile.TemporaryDirectory() as work:
        run = build_run(model, Path(work), args.upcast, args.smoke)
        total, rows = saved_by_shape(run)
        counts = token_counts(run)
        settings = run.settings
    print(f"{model}, {settings.compute_dtype}, unquantized weights "
          f"{'fp32 (--upcast)' if args.upcast else 'as the run keeps them'}: {total / 2**20:.1f} MB saved for backward")
    for row in rows[:12]:
        print(f"  {row['mb']:8.1f} MB  {row['tensors']:4d} tensors  {tuple(row['shape'])} {row['dtype']}")
    print(f"token counts over {counts['batches']} batches: {counts['padded_counts']} padded to "
          f"{counts['pad_to_multiple_of']}, {counts['unpadded_counts']} unpadded; {counts['pad_tokens']} pad tokens "
          f"beside {counts['tokens']}")
    name = f"saved_tensors_{model}{'_upcast' if args.upcast else ''}.json"
    out = args.out or Path(__file__).parent / "results" / name
    write_report(out, {"model": model, "compute_dtype": settings.compute_dtype, "upcast": args.upcast,
                       "saved_mb": round(total / 2**20, 1), "by_shape": rows, "token_counts": counts})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
