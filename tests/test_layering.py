"""The dependency rule storage <- jobs <- app, checked in fresh interpreters."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

FORBIDDEN = {
    "storage": ["torch", "gradio", "transformers", "jobs", "app"],
    "storage.db": ["torch", "gradio"],
    "storage.jobs_repo": ["torch", "gradio"],
    "jobs": ["gradio", "app"],
    "jobs.submit": ["gradio", "torch", "app"],
    "jobs.worker": ["gradio", "torch", "app"],
    "jobs.__main__": ["gradio", "torch", "app"],
    "app.server": ["torch"],
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_import_does_not_load_higher_layers(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {FORBIDDEN[module]!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {module} loaded: {result.stdout.strip()}"
