"""Shared fixtures. Everything runs on CPU with no network: the base model is the locally built demo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """The demo base model, built once per test session."""
    from jobs.demo_model import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("shared-models"))


def studio_environ(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "STUDIO_HEARTBEAT_S": "1", "PYTHONPATH": str(REPO_ROOT),
            **extra}


def seed_demo_model(data_dir: Path, demo_model_dir: Path) -> None:
    """Put the session's demo model into a fresh data dir (building it again costs seconds per test)."""
    target = data_dir / "models" / demo_model_dir.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(demo_model_dir, target)


@pytest.fixture
def studio(tmp_path, monkeypatch, demo_model_dir):
    """A fresh studio (data dir, migrated SQLite database) with the demo model in place."""
    from jobs.studio import open_studio
    from storage.settings import load_settings

    data_dir = tmp_path / "data"
    seed_demo_model(data_dir, demo_model_dir)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(data_dir))
    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir)}))
    yield studio
    studio.db.dispose()
