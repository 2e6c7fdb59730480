"""One rank of a several-device training run without the ledger: `python -m jobs.training.ranks ARGS_JSON`, started
by torchrun (jobs.training.distributed.launch_command). Rank 0 appends each logged step's metrics to a JSON-lines
file and writes the adapter; the other ranks train their share and keep nothing. The bench and the DDP tests run
training this way; the queue's child runs the same `train` under torchrun with the ledger as rank 0's sink."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.spec import TrainSpec
from jobs.training.distributed import is_main
from jobs.training.train import quiet_libraries, train


def main(argv: list[str]) -> int:
    args = json.loads(Path(argv[0]).read_text())
    metrics_file = Path(args["metrics"])

    def on_metrics(step: int, values: dict[str, float], total_steps: int | None) -> None:
        with metrics_file.open("a") as out:
            out.write(json.dumps({"step": step, **values}) + "\n")

    quiet_libraries()
    result = train(TrainSpec.model_validate(args["spec"]), Path(args["out_dir"]), args["base_model"],
                   Path(args["dataset"]), on_metrics, lambda: False)
    if is_main() and result.adapter_dir is not None:
        print(f"adapter saved to {result.adapter_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
