"""Where a base model comes from: a studio base (the demo, the offline SmolLM2), a local directory, or a hub id.
No torch here: the bases are built or prepared lazily, by the process that needs their weights."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from jobs.models.contents import LLAMA_TARGETS, module_kinds, readable_safetensors
from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL, STUDIO_BASE_MODELS
from storage.access import current_person

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
HEX_COMMIT = re.compile(r"^[0-9a-f]{40}$")
HUB_METADATA = ["*.json", "*.jinja", "tokenizer.model", "*.txt"]
"""What submit fetches of a hub base at its pinned commit: config and tokenizer, for the plan and the checks."""
HUB_FILES = [*HUB_METADATA, "*.safetensors"]
"""What training fetches: the same, and the weights as safetensors (never pickles, never code)."""


def resolve_base_model(base_model: str, models_dir: Path,
                       report: Callable[[str, float], None] | None = None) -> str:
    """A path or hub id that `from_pretrained` accepts. Builds or prepares a studio base on first use, telling
    `report` (phase, percent) what it does."""
    if base_model == DEMO_BASE_MODEL:
        from jobs.models.demo import ensure_demo_model

        return str(ensure_demo_model(models_dir))
    if base_model == SMOLLM2_BASE_MODEL:
        from jobs.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2(models_dir, report))
    return base_model


def prepared_path(base_model: str, models_dir: Path) -> str | None:
    """Like `resolve_base_model`, but never builds or downloads: None when a studio base is not there yet."""
    if base_model == DEMO_BASE_MODEL:
        from jobs.models.demo import demo_model_ready

        return str(Path(models_dir) / DEMO_BASE_MODEL) if demo_model_ready(models_dir) else None
    if base_model == SMOLLM2_BASE_MODEL:
        from jobs.models.smollm2 import is_prepared, model_dir

        return str(model_dir(models_dir)) if is_prepared(models_dir) else None
    return base_model


def is_hub_id(base_model: str) -> bool:
    return base_model not in STUDIO_BASE_MODELS and not looks_local(base_model)


def looks_local(base_model: str) -> bool:
    """A local folder is written as a path (/…, ./…, ~/…); anything else is a studio base or a hub id. Never probed
    on disk, so the answer tells nothing about which server paths exist."""
    return base_model.startswith(("/", ".", "~"))


def allowed_model_roots(configured: list[Path] | None, models_dir: Path) -> list[Path]:
    """The folders local base models may come from for the person acting: STUDIO_MODEL_DIRS, else the studio's
    models folder and the Hugging Face cache. With accounts, a person who is not an admin gets the listed folders
    only (none when none are listed): the models folder holds whatever an admin put there and the cache every
    download, and neither was offered to them. Admins, the single local person (no accounts), the CLI and workers
    keep the default."""
    listed = [Path(root).expanduser().resolve() for root in configured or []]
    person = current_person()
    if listed or (person is not None and not person.admin):
        return listed
    from huggingface_hub.constants import HF_HUB_CACHE

    return [Path(models_dir).resolve(), Path(HF_HUB_CACHE).expanduser().resolve()]


def base_model_problem(base_model: str, allowed_roots: list[Path]) -> str | None:
    """Why this base model cannot be used, or None. Hub ids are only checked for shape (offline here)."""
    if base_model in STUDIO_BASE_MODELS:
        return None
    if looks_local(base_model):
        return local_model_problem(Path(base_model).expanduser(), allowed_roots)
    if not HUB_ID.match(base_model):
        return (f"'{base_model}' is neither a studio base ({', '.join(STUDIO_BASE_MODELS)}), a local folder "
                f"(/…, ./… or ~/…), nor a hub id of the form owner/name")
    return None


def local_model_problem(path: Path, allowed_roots: list[Path]) -> str | None:
    resolved = path.resolve()
    allowed = any(resolved == root or root in resolved.parents for root in allowed_roots)
    if not allowed or not resolved.is_dir():
        # One message for "not there" and "not allowed": the API must not tell which server paths exist.
        return (f"no model folder '{path}' among the folders this studio may load from (STUDIO_MODEL_DIRS: "
                f"{', '.join(map(str, allowed_roots)) or 'none listed'})")
    if not (resolved / "config.json").is_file():
        return f"{path} has no config.json, so it is not a transformers model folder"
    weights = sorted(resolved.glob("*.safetensors"))
    if not weights:
        return f"{path} has no .safetensors weights (only safetensors are loaded, never pickles)"
    for file in weights:
        if not readable_safetensors(file):
            return f"{path}/{file.name} is not a readable safetensors file (empty or damaged)"
    for name in ("config.json", "tokenizer_config.json"):
        if (resolved / name).is_file() and not _valid_json(resolved / name):
            return f"{path}/{name} is not valid JSON"
    return None


def _valid_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        return False
    return True
def portable_base_reference(base_model: str) -> str:
    """What an adapter's config names as its base, so that `AutoPeftModelForCausalLM` finds it elsewhere: never a
    server path. A hub id stays as it is and the bundled SmolLM2 is named by its hub id (its weights are the hub
    model's, up to Q4_1 rounding); the demo model is on no hub and keeps its studio name; a local folder is named by
    its last part (the model card says where it was)."""
    if base_model == SMOLLM2_BASE_MODEL:
        from jobs.models.smollm2 import HUB_ID

        return HUB_ID
    if base_model in STUDIO_BASE_MODELS or not looks_local(base_model):
        return base_model
    return Path(base_model).expanduser().name


def describe_base(base_model: str, base_path: str) -> str:
    """One sentence for a model card: which base, and where to get it."""
    if base_model == DEMO_BASE_MODEL:
        return (f"`{DEMO_BASE_MODEL}`, the studio's offline demo model (random weights, built locally and "
                f"deterministically; on the training machine at `{base_path}`). Anywhere else, a studio checkout "
                f"builds the identical model: `python -c \"from jobs.models.demo import ensure_demo_model; "
                f"print(ensure_demo_model('models'))\"`.")
    if base_model == SMOLLM2_BASE_MODEL:
        from jobs.models.smollm2 import HUB_ID, WHEEL_REQUIREMENT

        return (f"`{SMOLLM2_BASE_MODEL}`: SmolLM2-135M-Instruct (Apache-2.0), dequantized to fp32 from the Q4_1 GGUF "
                f"in the PyPI wheel `{WHEEL_REQUIREMENT}` (on the training machine at `{base_path}`). It corresponds "
                f"to the hub model `{HUB_ID}` up to Q4_1 rounding; a studio checkout prepares the identical folder "
                f"offline: `python -c \"from jobs.models.smollm2 import ensure_smollm2; "
                f"print(ensure_smollm2('models'))\"`.")
    if looks_local(base_model):
        return f"the local model folder `{base_path}` on the training machine."
    return f"`{base_model}` from the Hugging Face hub, at the commit pinned when the job was submitted."


def folder_readable(base_model: str, models_dir: Path, model_dirs: Sequence[Path] = ()) -> bool:
    """Whether the person acting may have a local base folder read at all, its config and headers included: only
    one submit would accept (`allowed_model_roots`), so no form or API answer tells what lies in another folder of
    the server. A studio base or a hub id is not a folder: True."""
    if base_model in STUDIO_BASE_MODELS or not looks_local(base_model):
        return True
    return base_model_problem(base_model, allowed_model_roots(list(model_dirs), models_dir)) is None


def base_module_kinds(base_model: str, models_dir: Path, model_dirs: Sequence[Path] = ()) -> dict[str, str] | None:
    """The base's leaf modules by kind (see `module_kinds`), without loading or downloading it: a studio base from
    its folder once built (before: the Llama names), a local folder from its headers (one the person may load
    from: `folder_readable`; `model_dirs`: STUDIO_MODEL_DIRS), a hub id from the local hub cache once downloaded.
    None when unknown (a hub id not downloaded yet, a folder not theirs to read)."""
    if base_model in STUDIO_BASE_MODELS:
        path = prepared_path(base_model, models_dir)
        return (module_kinds(Path(path)) if path else None) or dict(LLAMA_TARGETS)
    if looks_local(base_model):
        if not folder_readable(base_model, models_dir, model_dirs):
            return None
        return module_kinds(Path(base_model).expanduser())
    snapshot = hub_cache_snapshot(base_model)
    return module_kinds(snapshot) if snapshot else None


def hub_cache_snapshot(hub_id: str, revision: str | None = None) -> Path | None:
    """The local Hugging Face cache's folder of `hub_id`: at `revision` (a commit) when given, else the commit its
    `main` ref names, else the newest download. None when the cache holds none of it. Never asks the hub."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    if revision is not None:
        return snapshots / revision if HEX_COMMIT.match(revision) and (snapshots / revision).is_dir() else None
    main = snapshots.parent / "refs" / "main"
    commit = main.read_text().strip() if main.is_file() else ""
    if HEX_COMMIT.match(commit) and (snapshots / commit).is_dir():
        return snapshots / commit
    found = sorted(snapshots.glob("*/"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    return found[-1] if found else None


def pin_hub_base(hub_id: str) -> dict:
    """The commit a hub base trains at, fixed when its job is submitted: the hub's answer for its main branch now,
    with the config and tokenizer fetched at that commit (the step plan reads them); with the hub unreachable
    (HF_HUB_OFFLINE, no network, a refusal), the commit the local Hugging Face cache holds for it. Raises
    LookupError saying why when neither knows it. The hub is asked anonymously: submit runs as the person, and the
    operator's token is not theirs (a gated base an admin downloaded is pinned from the cache)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    why = "HF_HUB_OFFLINE is set"
    if not HF_HUB_OFFLINE:
        try:
            commit = HfApi(token=False).model_info(hub_id).sha
            snapshot_download(hub_id, revision=commit, allow_patterns=HUB_METADATA, token=False)
            return {"revision": commit, "revision_from": "hub"}
        except Exception as error:  # the client's error types vary by version; the cache may still know it
            why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    snapshot = hub_cache_snapshot(hub_id)
    if snapshot is None or not (snapshot / "config.json").is_file():
        raise LookupError(f"'{hub_id}' cannot be pinned to a revision: the hub did not answer ({why}) and the local "
                          f"Hugging Face cache ({HF_HUB_CACHE}) holds no download of it; download it once with hub "
                          f"access, or train on a local folder")
    return {"revision": snapshot.name, "revision_from": "cache"}


def fetch_hub_base(hub_id: str, revision: str) -> Path:
    """The local folder of `hub_id` at the commit its job pinned, downloaded first when the cache lacks it: its config,
    tokenizer and safetensors weights, never pickles or code."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub_id, revision=revision, allow_patterns=HUB_FILES))
