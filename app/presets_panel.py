"""Presets and "show as code", beside the training form: save the form as a named preset, load one (or a JSON/YAML
file someone shared), download it, and see the form as the exact `python -m jobs submit` spec and as a plain TRL
script that trains the same adapter without the studio."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from app.errors import user_error
from app.safe_text import SafeMarkdown
from app.spec_form import SpecForm, form_values, spec_from_form
from jobs.models.contents import chat_template_text
from jobs.models.resolve import prepared_path
from jobs.planning import job_plan
from jobs.presets import SUFFIXES, PresetError, load_preset, parse_preset, preset_file, preset_names, save_preset
from jobs.spec import SpecError, parse_spec
from jobs.studio import Studio
from jobs.training.script import cli_text, plain_trl_script
from storage import catalog


def save(studio: Studio, name: str, raw: dict) -> str:
    try:
        save_preset(studio.settings.data_dir, name, raw)
    except PresetError as error:
        raise user_error("\n".join(error.problems)) from None
    return name.strip()


def load(studio: Studio, name: str) -> dict:
    try:
        return load_preset(studio.settings.data_dir, name)
    except PresetError as error:
        raise user_error("\n".join(error.problems)) from None


def load_file(path: str) -> dict:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise user_error(f"file: a preset is a {', '.join(SUFFIXES)} file, not '{suffix or Path(path).name}'")
    try:
        return parse_preset(Path(path).read_text(encoding="utf-8"), suffix)
    except (PresetError, UnicodeDecodeError) as error:
        problems = error.problems if isinstance(error, PresetError) else ["file: not UTF-8 text"]
        raise user_error("\n".join(problems)) from None


def as_code(studio: Studio, raw: dict) -> tuple[str, str]:
    """The form as a CLI spec and as a plain TRL script; raises naming every problem when the form is invalid."""
    try:
        spec = parse_spec(raw)
    except SpecError as error:
        raise user_error(error.as_text()) from None
    base_path = prepared_path(spec.base_model, studio.settings.models_dir) or spec.base_model
    template = chat_template_text(Path(base_path)) if Path(base_path).is_dir() else None
    with studio.db.read() as session:
        start = catalog.get_adapter_by_name(session, spec.init_adapter) if spec.init_adapter else None
    planned = job_plan(studio, spec).spec  # the script has no rule: it gets the values chosen for this data
    return cli_text(spec), plain_trl_script(planned, base_path, f"{spec.dataset}.jsonl", chat_template=template,
                                            eval_file=f"{spec.eval_dataset}.jsonl",
                                            start_adapter=str(studio.absolute(start.path)) if start else None)


def build(studio: Studio, form: SpecForm) -> None:
    with gr.Accordion("Presets and code", open=False):
        with gr.Row():
            picked = gr.Dropdown(choices=preset_names(studio.settings.data_dir), label="Saved presets", scale=2,
                                 elem_id="preset-picked")
            load_button = gr.Button("Load into the form", scale=1)
            download = gr.DownloadButton("Download preset", value=None, interactive=False, scale=1)
        with gr.Row():
            new_name = gr.Textbox(label="Save the form as", placeholder="preset name", scale=2)
            save_button = gr.Button("Save preset", scale=1)
            upload = gr.UploadButton("Load a JSON/YAML file", file_types=list(SUFFIXES), scale=1)
        status = SafeMarkdown(elem_id="preset-status")
        show = gr.Button("Show as CLI / Python")
        cli = gr.Code(label="python -m jobs submit", language="shell", visible=False, elem_id="spec-as-cli")
        script = gr.Code(label="The same job as a plain TRL script", language="python", visible=False,
                         elem_id="spec-as-python")

    def on_save(name, *values):
        saved = save(studio, name, spec_from_form(studio, form.names, list(values)))
        return (f"Saved preset **{saved}**.",
                gr.update(choices=preset_names(studio.settings.data_dir), value=saved))

    def on_pick(name):
        if not name:
            return gr.update(value=None, interactive=False)
        shared = studio.settings.exports_dir / "presets" / f"{name}.json"  # only the exports folder is served
        shared.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(preset_file(studio.settings.data_dir, name), shared)
        return gr.update(value=str(shared), interactive=True)

    def filled(preset: dict, source: str):
        return [f"Loaded {source} ({len(preset)} field(s) set; the rest at their defaults).",
                *form_values(preset, form.names)]

    def on_show(*values):
        command, code = as_code(studio, spec_from_form(studio, form.names, list(values)))
        return gr.update(value=command, visible=True), gr.update(value=code, visible=True)

    private = dict(api_visibility="private")
    save_button.click(on_save, [new_name, *form.controls], [status, picked], **private)
    picked.change(on_pick, picked, download, **private)
    load_button.click(lambda name: filled(load(studio, name), f"preset **{name}**"), picked,
                      [status, *form.controls], **private)
    upload.upload(lambda path: filled(load_file(path), f"**{Path(path).name}**"), upload, [status, *form.controls],
                  **private)
    show.click(on_show, form.controls, [cli, script], **private)
