"""The domain: what a training job is and everything that happens to it. Imports storage, never gradio.

The front door is `spec` (the typed job) and `submit` (validate + ledger + enqueue, cancel); the rooms behind it
are `queue`, `training`, `models`, `data` and `chat` (see docs/architecture.md for what each may import)."""
