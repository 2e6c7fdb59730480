"""Training one adapter: `train()` and its callbacks, checkpoints, the adapter files, the model card, the export
zip. Knows nothing of the ledger, the queue or the UI."""
