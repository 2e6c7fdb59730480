"""Running a bench script's --smoke mode the way CI does: in its own process from the repository root."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(script: str, out: Path, timeout_s: float = 600) -> tuple[subprocess.CompletedProcess, dict]:
    """(the finished process, its JSON report) of `bench/<script> --smoke --out <out>`; fails on a non-zero exit."""
    done = subprocess.run([sys.executable, f"bench/{script}", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())
