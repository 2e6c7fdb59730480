"""Evaluation: adapters of one base and the base itself answering a whole eval set (a training job's held-out rows,
a stored dataset, or a prompt suite) in a queued job; every answer written to a predictions JSONL, and per adapter
the loss and perplexity of the reference answers and text metrics from maintained libraries (jobs.evaluate.metrics).

`spec` is what a person asks for, `sets` turns it into rows, `submit` checks and queues it, `run` is the job (the
child process: torch only there), `results` reads what a job wrote for the UI, the API and the CLI."""
