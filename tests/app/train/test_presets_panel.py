"""'Show as CLI / Python' for the form: the script continues the adapter the form names, where the studio keeps it."""

from app.train.presets_panel import as_code
from jobs.queue.devices import most_devices
from storage.models import Adapter


def test_the_script_of_a_dpo_form_starts_from_the_named_adapter(studio):
    with studio.db.write() as session:
        session.add(Adapter(name="liked", base_model="demo-tiny-llama", path="adapters/job-7", size_bytes=1))
    cli, script = as_code(studio, {"method": "dpo", "dataset": "votes", "init_adapter": "liked"})
    assert '"method": "dpo"' in cli and '"init_adapter": "liked"' in cli
    assert f"START = {str(studio.absolute('adapters/job-7'))!r}" in script
    assert "DPOTrainer(" in script and "SFTTrainer" not in script and "'trainer.beta': 0.1," in script


def test_the_script_of_all_devices_says_how_many_this_studio_has(studio):
    cli, script = as_code(studio, {"devices": "all"})
    assert '"devices": "all"' in cli  # the CLI keeps the word; the script has no rule, so it gets the count
    count = most_devices(studio)
    assert (f"torchrun --nproc-per-node={count} train.py" in script) == (count > 1)
