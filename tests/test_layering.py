"""The dependency rules: storage <- jobs <- app, checked in fresh interpreters and on the source of every module
(lazy imports included), which room of jobs/ may import which (docs/architecture.md), and that every module of
jobs/ belongs to a room: the modules are read from the tree, so a new one is checked the day it is added."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.module_graph import LAYERS, imported, imported_at_import_time, modules_of

HEAVY = ["torch", "transformers", "gradio"]
# Importing these must not load the listed modules (checked in a fresh interpreter).
FORBIDDEN = {
    "storage": ["torch", "gradio", "transformers", "jobs", "app"],
    "storage.db": ["torch", "gradio"],
    "storage.jobs_repo": ["torch", "gradio"],
    "storage.catalog": ["torch", "gradio"],
    "storage.file_modes": ["torch", "gradio"],  # every process sets its umask through it first
    "jobs": ["gradio", "app"],
    "jobs.submit": [*HEAVY, "app"],
    "jobs.combine_rules": [*HEAVY, "app"],  # the Adapters tab and the CLI check a combination without torch
    "jobs.__main__": [*HEAVY, "app", "gradio_client"],  # the client loads only for --url
    "jobs.queue.worker": [*HEAVY, "app"],
    "jobs.queue.child": [*HEAVY, "app"],  # torch arrives only once it starts training
    "jobs.data.store": HEAVY,
    "jobs.data.hub": HEAVY,  # huggingface_hub loads only when an import asks the hub
    "jobs.secrets": [*HEAVY, "app"],
    "jobs.hub_access": [*HEAVY, "app"],
    "jobs.credentials": [*HEAVY, "app"],
    "jobs.training.hub": [*HEAVY, "app"],
    "storage.secrets_repo": ["torch", "gradio", "jobs", "app"],
    "jobs.data.preview": HEAVY,  # the tokenizer loads only when a preview is asked for
    "jobs.data.quota": HEAVY,  # the web server asks it while an upload streams in
    "jobs.data.uploads": HEAVY,  # it finds Gradio's cache without importing gradio
    "jobs.models.resolve": HEAVY,
    "jobs.models.contents": HEAVY,
    "jobs.models.demo": HEAVY,
    "jobs.models.shape": HEAVY,  # the memory verdict is arithmetic on config and headers: the web process asks it
    "jobs.models.memory": HEAVY,
    "jobs.models.memory_inputs": [*HEAVY, "jobs.data", "jobs.step_plan"],  # the estimate is handed what it needs
    "jobs.models.fits": [*HEAVY, "jobs.data", "jobs.step_plan"],
    "jobs.run_settings.settings": [*HEAVY, "jobs.data", "jobs.models", "jobs.training"],  # pure rules
    "jobs.training.script": [*HEAVY, "app"],  # the Train tab renders it in the web process
    "jobs.chat.request": HEAVY,
    "jobs.chat.votes": HEAVY,
    "jobs.chat.suites": HEAVY,  # the scheduler is handed in: the web process loads torch only when chat runs
    "jobs.chat.scheduler": HEAVY,  # the engine is handed in
    "jobs.step_plan": [*HEAVY, "app"],  # the plan panel asks it on every change of the form
    "jobs.planning": [*HEAVY, "app"],
    "jobs.sweeps": [*HEAVY, "app"],
    "jobs.search.driver": [*HEAVY, "app"],  # the web process starts and reads searches
    "jobs.presets": [*HEAVY, "app"],
    "jobs.training.train": ["gradio", "app"],
    "jobs.training.prepare": ["gradio", "app"],
    "jobs.chat.engine": ["gradio", "app"],
    "jobs.evaluate.submit": HEAVY,  # the web process checks and queues evaluations
    "jobs.evaluate.results": HEAVY,  # and reads their results
    "jobs.evaluate.run": ["gradio", "app"],
    "app.web.server": ["torch", "transformers"],
}

# Which parts of jobs/ each room may import (itself always). A room is a subpackage (its modules included) or a
# module of jobs/ itself. The queue's child starts training; nothing trains the queue. Models, data and chat never
# reach into the queue or training.
ROOMS = {
    "jobs": set(),  # the package's own __init__: a docstring
    "jobs.spec": {"jobs.spec_words", "jobs.spec_versions", "jobs.rewards"},
    "jobs.rewards": set(),  # GRPO's rewards: pure functions the spec checks with and the plain script copies
    "jobs.spec_words": set(),
    "jobs.spec_versions": set(),
    "jobs.spec_store": {"jobs.spec", "jobs.spec_versions"},
    "jobs.spec_docs": {"jobs.spec", "jobs.spec_words"},  # renders the spec table in docs/api.md
    "jobs.failures": set(),
    "jobs.studio": set(),
    "jobs.secrets": {"jobs.studio"},
    "jobs.presets": {"jobs.spec", "jobs.spec_store", "jobs.spec_versions", "jobs.studio"},
    "jobs.credentials": {"jobs.studio", "jobs.secrets"},  # set, clear and status of a per-person credential
    "jobs.hub_access": {"jobs.studio", "jobs.secrets", "jobs.credentials"},  # whose hub token a request uses
    # each person's W&B key, for their own runs only
    "jobs.tracker_keys": {"jobs.studio", "jobs.secrets", "jobs.credentials"},
    # A spec, a base and a machine into run settings: read by training, the script and the estimate alike.
    "jobs.run_settings": {"jobs.spec", "jobs.rewards"},
    "jobs.models": {"jobs.spec", "jobs.studio", "jobs.run_settings"},
    "jobs.data": {"jobs.spec", "jobs.studio", "jobs.models", "jobs.secrets", "jobs.hub_access"},
    "jobs.step_plan": {"jobs.spec", "jobs.data"},  # the per-job rule: arithmetic on the data's token counts
    "jobs.planning": {"jobs.spec", "jobs.studio", "jobs.models", "jobs.data", "jobs.step_plan"},  # counts them
    # votes are exported as a dataset
    "jobs.chat": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.models", "jobs.data"},
    "jobs.training": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.models", "jobs.data", "jobs.secrets",
                      "jobs.hub_access", "jobs.run_settings", "jobs.step_plan",  # a direct caller's empty fields
                      "jobs.rewards"},  # GRPO's rewards
    "jobs.queue": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.failures", "jobs.models", "jobs.data",
                   "jobs.training", "jobs.run_settings", "jobs.planning",  # the child sizes its memory estimate
                   "jobs.tracker_keys",  # the child puts its owner's W&B key in its own environment
                   "jobs.evaluate"},  # and runs eval jobs
    "jobs.combine_rules": {"jobs.spec"},  # what PEFT's weighted combination accepts, from adapter configs alone
    "jobs.submit": {"jobs.spec", "jobs.studio", "jobs.models", "jobs.data", "jobs.queue", "jobs.run_settings",
                    "jobs.step_plan", "jobs.planning", "jobs.combine_rules", "jobs.rewards",
                    "jobs.tracker_keys"},  # report_to wandb needs the person's own key
    "jobs.sweeps": {"jobs.spec", "jobs.spec_versions", "jobs.studio", "jobs.submit"},  # submitted as one group
    # a search's trials are sweep points chosen one by one (the sweep's cap and axes text), queued like any job
    "jobs.search": {"jobs.spec", "jobs.spec_versions", "jobs.studio", "jobs.submit", "jobs.sweeps"},
    # an eval job answers on the chat engine, rebuilds a training job's held-out split, and is queued like training
    "jobs.evaluate": {"jobs.spec", "jobs.spec_words", "jobs.spec_store", "jobs.studio", "jobs.data", "jobs.chat",
                      "jobs.models", "jobs.training", "jobs.queue", "jobs.submit"},
}
ROOMS["jobs.cli"] = set(ROOMS)  # the CLI: a verb for what every room does
ROOMS["jobs.__main__"] = {"jobs.cli"}

KNOWN_BREAKS: set[str] = set()
"""Imports that break the table today, each with the change that removes it (none now). The list only shrinks: an
entry that no longer breaks anything fails the test too."""
HEAVY_AT_IMPORT = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate")
"""What app/ loads only inside the function that needs it: the web process starts without them."""


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_import_does_not_load_higher_layers(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {FORBIDDEN[module]!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {module} loaded: {result.stdout.strip()}"


def _room(module: str) -> str | None:
    """The room a module of jobs/ lives in: a room named exactly, else the subpackage it sits in."""
    if module in ROOMS:
        return module
    return next((room for room in ROOMS if room != "jobs" and module.startswith(room + ".")), None)


def room_breaks() -> set[str]:
    broken = set()
    for module, path in modules_of("jobs").items():
        room = _room(module)
        if room is None:
            continue  # test_every_module_of_jobs_belongs_to_a_room names it
        for name in imported(module, path):
            target = _room(name)
            if target and target != room and target not in ROOMS[room]:
                broken.add(f"{module} imports {name}")
    return broken


def test_every_module_of_jobs_belongs_to_a_room():
    homeless = [module for module in modules_of("jobs") if _room(module) is None]
    assert not homeless, f"give each a room in ROOMS (and in docs/architecture.md): {homeless}"


def test_each_room_imports_only_what_it_may():
    broken = room_breaks()
    assert not broken - KNOWN_BREAKS, "\n".join(sorted(broken - KNOWN_BREAKS))
    assert not KNOWN_BREAKS - broken, f"fixed, so strike from KNOWN_BREAKS: {sorted(KNOWN_BREAKS - broken)}"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer):
    below = set(LAYERS[: LAYERS.index(layer) + 1])
    outside = {"tests", "bench", *(set(LAYERS) - below)}
    broken = [f"{module} imports {name}" for module, path in modules_of(layer).items()
              for name in imported(module, path) if name.split(".")[0] in outside]
    assert not broken, "\n".join(broken)


def test_storage_imports_neither_torch_nor_gradio():
    broken = [f"{module} imports {name}" for module, path in modules_of("storage").items()
              for name in imported(module, path) if name.split(".")[0] in ("torch", "gradio", "transformers")]
    assert not broken, "\n".join(broken)


def test_jobs_never_imports_gradio():
    broken = [f"{module} imports {name}" for module, path in modules_of("jobs").items()
              for name in imported(module, path) if name.split(".")[0] == "gradio"]
    assert not broken, "\n".join(broken)


def test_app_loads_the_training_libraries_only_where_it_uses_them():
    broken = [f"{module} imports {name} when it is imported" for module, path in modules_of("app").items()
              for name in imported_at_import_time(module, path) if name.split(".")[0] in HEAVY_AT_IMPORT]
    assert not broken, "\n".join(broken)
