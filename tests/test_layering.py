"""The dependency rules: storage <- jobs <- app, checked in fresh interpreters, and which room of jobs/ may
import which (docs/architecture.md), checked on the source of every module, lazy imports included."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

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
    "jobs.__main__": [*HEAVY, "app", "gradio_client"],  # the client loads only for --url
    "jobs.queue.worker": [*HEAVY, "app"],
    "jobs.queue.child": [*HEAVY, "app"],  # torch arrives only once it starts training
    "jobs.data.store": HEAVY,
    "jobs.data.hub": HEAVY,  # huggingface_hub loads only when an import asks the hub
    "jobs.secrets": [*HEAVY, "app"],
    "jobs.hub_access": [*HEAVY, "app"],
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
    "jobs.training.train": ["gradio", "app"],
    "jobs.chat.engine": ["gradio", "app"],
    "app.server": ["torch", "transformers"],
}

# Which parts of jobs/ each room may import (itself always). The queue's child starts training; nothing trains
# the queue. Models, data and chat never reach into the queue or training.
ROOMS = {
    "jobs.spec": {"jobs.spec_words", "jobs.spec_versions"},
    "jobs.spec_words": set(),
    "jobs.spec_versions": set(),
    "jobs.spec_store": {"jobs.spec", "jobs.spec_versions"},
    "jobs.failures": set(),
    "jobs.studio": set(),
    "jobs.secrets": {"jobs.studio"},
    "jobs.presets": {"jobs.spec", "jobs.spec_store", "jobs.spec_versions", "jobs.studio"},
    "jobs.hub_access": {"jobs.studio", "jobs.secrets"},  # whose hub token a request uses
    # A spec, a base and a machine into run settings: read by training, the script and the estimate alike.
    "jobs.run_settings": {"jobs.spec"},
    "jobs.models": {"jobs.spec", "jobs.studio", "jobs.run_settings"},
    "jobs.data": {"jobs.spec", "jobs.studio", "jobs.models", "jobs.secrets", "jobs.hub_access"},
    # votes are exported as a dataset
    "jobs.chat": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.models", "jobs.data"},
    "jobs.training": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.models", "jobs.data", "jobs.secrets",
                      "jobs.hub_access", "jobs.run_settings"},
    "jobs.queue": {"jobs.spec", "jobs.spec_store", "jobs.studio", "jobs.failures", "jobs.models", "jobs.data",
                   "jobs.training", "jobs.run_settings"},
    "jobs.submit": {"jobs.spec", "jobs.studio", "jobs.models", "jobs.data", "jobs.queue", "jobs.run_settings"},
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_import_does_not_load_higher_layers(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {FORBIDDEN[module]!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {module} loaded: {result.stdout.strip()}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _room(module: str) -> str | None:
    return next((room for room in sorted(ROOMS, key=len, reverse=True)
                 if module == room or module.startswith(room + ".")), None)


def test_each_room_imports_only_what_it_may():
    broken = []
    for path in sorted((REPO_ROOT / "jobs").rglob("*.py")):
        module = _module_name(path)
        room = _room(module)
        if room is None:
            continue  # the package itself and the CLI may use every room
        for name in _imported(path):
            target = _room(name)
            if name.startswith(("app", "gradio")) or (target and target != room and target not in ROOMS[room]):
                broken.append(f"{module} imports {name}")
    assert not broken, "\n".join(broken)


def test_storage_imports_neither_jobs_nor_app():
    broken = [f"{_module_name(path)} imports {name}" for path in sorted((REPO_ROOT / "storage").rglob("*.py"))
              for name in _imported(path) if name.split(".")[0] in ("jobs", "app", "torch", "gradio")]
    assert not broken, "\n".join(broken)
