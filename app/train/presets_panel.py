"""Presets and "show as code", beside the training form: save the form as a named preset, load one (or a JSON/YAML
file someone shared), download it, and see the form as the exact `python -m jobs submit` spec and as a plain TRL
script that trains the same adapter without the studio."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.train.spec_form import SpecForm, form_values, spec_from_form
from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown
from jobs.models.contents import chat_template_text
from jobs.models.resolve import prepared_path
from jobs.presets import (
    MAX_PRESET_FILE_BYTES,
    SUFFIXES,
    PresetError,
    delete_preset,
    export_preset,
    load_preset,
    parse_preset,
    preset_names,
    save_preset,
    share_preset,
)
from jobs.spec import SpecError, parse_spec
from jobs.studio import Studio
from jobs.submit import planned_job
from jobs.training.script import cli_text, plain_trl_script
from storage import catalog


def _refused(call, *args):
    try:
        return call(*args)
    except PresetError as error:
        raise user_error("\n".join(error.problems)) from None


def save(studio: Studio, name: str, raw: dict) -> str:
    return _refused(save_preset, studio, name, raw)


def load(studio: Studio, name: str) -> dict:
    return _refused(load_preset, studio, name)


def delete(studio: Studio, name: str) -> None:
    _refused(delete_preset, studio, name)


def share(studio: Studio, name: str, shared: bool) -> None:
    _refused(share_preset, studio, name, shared)


def download(studio: Studio, name: str) -> str:
    return str(_refused(export_preset, studio, name))


def load_file(path: str) -> dict:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise user_error(f"file: a preset is a {', '.join(SUFFIXES)} file, not '{suffix or Path(path).name}'")
    if (size := Path(path).stat().st_size) > MAX_PRESET_FILE_BYTES:
        raise user_error(f"file: a preset file is at most {MAX_PRESET_FILE_BYTES:,} bytes (this one has {size:,})")
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
        # GRPO's reward model: the script loads it from its folder, as the job does.
        scorer = (catalog.get_adapter_by_name(session, spec.grpo_reward_adapter) if spec.grpo_reward_adapter
                  else None)
    for field, named, found in (("init_adapter", spec.init_adapter, start),
                                ("grpo_reward_adapter", spec.grpo_reward_adapter, scorer)):
        if named and found is None:  # a script without it would train another job than the form's
            raise user_error(f"{field}: no adapter named '{named}'")
    planned = planned_job(studio, spec).spec  # the script has no rule: it gets the values chosen for this data
    files = {name: f"{name}.jsonl" for name, _ in spec.mix_parts()} if spec.dataset_mix else f"{spec.dataset}.jsonl"
    return cli_text(spec), plain_trl_script(planned, base_path, files, chat_template=template,
                                            eval_file=f"{spec.eval_dataset}.jsonl",
                                            start_adapter=str(studio.absolute(start.path)) if start else None,
                                            reward_adapter=str(studio.absolute(scorer.path)) if scorer else None)


def build(studio: Studio, form: SpecForm, app: gr.Blocks) -> None:
    with gr.Accordion("Presets and code", open=False):
        with gr.Row():
            picked = gr.Dropdown(choices=[], label="Saved presets", scale=2, elem_id="preset-picked",
                                 info="yours, and others' an admin shared (owner/name)")
            load_button = gr.Button("Load into the form", scale=1)
            download = gr.DownloadButton("Download preset", value=None, interactive=False, scale=1)
            delete_button = gr.Button("Delete preset", scale=1, elem_id="preset-delete")
        with gr.Row():
            new_name = gr.Textbox(label="Save the form as", placeholder="preset name", scale=2)
            save_button = gr.Button("Save preset", scale=1)
            upload = gr.UploadButton("Load a JSON/YAML file", file_types=list(SUFFIXES), scale=1)
        shared = gr.Checkbox(label="Shared with everyone (admins decide)", value=False, elem_id="preset-shared")
        status = SafeMarkdown(elem_id="preset-status")
        show = gr.Button("Show as CLI / Python")
        cli = gr.Code(label="python -m jobs submit", language="shell", visible=False, elem_id="spec-as-cli")
        script = gr.Code(label="The same job as a plain TRL script", language="python", visible=False,
                         elem_id="spec-as-python")

    def on_save(name, *values):
        saved = save(studio, name, spec_from_form(studio, form.names, list(values)))
        return f"Saved preset **{saved}**.", gr.update(choices=preset_names(studio), value=saved)

    def on_pick(name):
        if not name:
            return gr.update(value=None, interactive=False)
        return gr.update(value=download(studio, name), interactive=True)

    def on_delete(name):
        delete(studio, name)
        return f"Deleted preset **{name}**.", gr.update(choices=preset_names(studio), value=None)

    def on_share(name, value):
        if not name:
            return gr.update()
        share(studio, name, value)
        return f"Preset **{name}** is {'shared with everyone' if value else 'private again'}."

    def fresh_choices():  # each person's own list, from the database on every page load
        return gr.update(choices=preset_names(studio))

    def filled(preset: dict, source: str):
        return [f"Loaded {source} ({len(preset)} field(s) set; the rest at their defaults).",
                *form_values(preset, form.names)]

    def on_show(*values):
        command, code = as_code(studio, spec_from_form(studio, form.names, list(values)))
        return gr.update(value=command, visible=True), gr.update(value=code, visible=True)

    private = dict(api_visibility="private")
    app.load(fresh_choices, None, picked, **private)
    save_button.click(on_save, [new_name, *form.controls], [status, picked], **private)
    delete_button.click(on_delete, picked, [status, picked], **private)
    shared.input(on_share, [picked, shared], status, **private)
    picked.change(on_pick, picked, download, **private)
    load_button.click(lambda name: filled(load(studio, name), f"preset **{name}**"), picked,
                      [status, *form.controls], **private)
    upload.upload(lambda path: filled(load_file(path), f"**{Path(path).name}**"), upload, [status, *form.controls],
                  **private)
    show.click(on_show, form.controls, [cli, script], **private)
