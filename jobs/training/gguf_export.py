"""One GGUF export of an adapter: a folder with the merged model as GGUF, the LoRA alone as a GGUF adapter (where
llama.cpp takes one), an Ollama Modelfile (where the chat template translates) and a README saying how to run them.

File names inside do not carry the adapter's name (a rename would make them stale): `model-<quantization>.gguf`,
`lora-f16.gguf`, `Modelfile`, `README.md`. The download zip's top folder carries the name."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from jobs.models.contents import is_whole_model
from jobs.training.checkpoints import fsync_tree
from jobs.training.gguf import ExportError, conversion_problems, write_gguf, write_lora_gguf
from jobs.training.modelfile import TemplateError, measure, modelfile, sampling_defaults, stop_tokens

Progress = Callable[[str, int, int], None]


def export_problems(base_path: str) -> list[str]:
    """What refuses the export before anything is merged: the base's architecture and shape (the tokenizer is
    checked on the merged folder, which carries the adapter's)."""
    return [p for p in conversion_problems(Path(base_path)) if not p.startswith("tokenizer:")]


def build_export(merged_dir: Path, adapter_dir: Path, out_dir: Path, quantization: str, name: str,
                 progress: Progress | None = None) -> dict:
    """Write the export folder at `out_dir` atomically (built beside it, fsynced, renamed); return what it holds:
    {"files", "modelfile" (None or why not), "lora" (None or why not)}."""
    partial = out_dir.with_name(f"{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model_file = f"model-{quantization}.gguf"
        ollama, refused = _modelfile(merged_dir, model_file)  # before the slow part: its refusal is said either way
        write_gguf(merged_dir, partial / model_file, quantization, name, progress)
        record = {"quantization": quantization, "files": [model_file], "modelfile": refused, "lora": None}
        if ollama is not None:
            (partial / "Modelfile").write_text(ollama, encoding="utf-8")
            record["files"].append("Modelfile")
        config = json.loads((merged_dir / "config.json").read_text())
        if is_whole_model(adapter_dir):
            record["lora"] = "a whole model (full or freeze fine-tuning) has no LoRA adapter: the model file is all"
        else:
            try:
                write_lora_gguf(adapter_dir, config, partial / "lora-f16.gguf", name)
                record["files"].append("lora-f16.gguf")
            except ExportError as error:
                record["lora"] = str(error)
        (partial / "README.md").write_text(readme(name, record), encoding="utf-8")
        (partial / "export.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        fsync_tree(partial)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


def _modelfile(merged_dir: Path, model_file: str) -> tuple[str | None, str | None]:
    """(the Modelfile, None), or (None, why the chat template was refused)."""
    import gguf
    from transformers import AutoTokenizer

    from jobs.models.templates import render_chat

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    if not tokenizer.chat_template:
        return None, "chat_template: the tokenizer has none, so there is no chat format to write"

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        return render_chat(tokenizer, messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    try:
        found = measure(render, tokenizer.bos_token)
    except TemplateError as error:
        return None, str(error)
    config = json.loads((merged_dir / "config.json").read_text())
    generation = merged_dir / "generation_config.json"
    generation_config = json.loads(generation.read_text()) if generation.is_file() else {}
    eos_ids = generation_config.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else []
    eos = [tokenizer.convert_ids_to_tokens(i) for i in eos_ids] + [tokenizer.eos_token]
    stops = stop_tokens(eos, found, set(tokenizer.all_special_tokens))
    adds_bos = bool(gguf.SpecialVocab(merged_dir, load_merges=False).add_special_token.get("bos"))
    try:
        return modelfile(model_file, found, stops, sampling_defaults(generation_config),
                         config["max_position_embeddings"], adds_bos), None
    except TemplateError as error:
        return None, str(error)


def readme(name: str, record: dict) -> str:
    model = record["files"][0]
    lines = [f"# {name} as GGUF ({record['quantization']})", "",
             f"`{model}`: the adapter merged into its base, for llama.cpp, Ollama and LM Studio.", "",
             "```sh", f"llama-cli -m {model} -cnv", "```", ""]
    if record["modelfile"] is None:
        lines += ["Ollama: the `Modelfile` carries the base's chat template, stop tokens and sampling defaults.", "",
                  "```sh", f"ollama create {name.lower()} -f Modelfile", f"ollama run {name.lower()}", "```", ""]
    else:
        lines += [f"No Ollama Modelfile: {record['modelfile']}", ""]
    if record["lora"] is None:
        lines += ["`lora-f16.gguf`: the LoRA alone, for llama.cpp on a GGUF of the same base "
                  "(`llama-cli -m base.gguf --lora lora-f16.gguf`).", ""]
    else:
        lines += [f"No GGUF LoRA adapter: {record['lora']}", ""]
    return "\n".join(lines)


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return None

