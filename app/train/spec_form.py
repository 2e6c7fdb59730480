"""The training form: one control per spec field, built from the spec type alone (label, help, range, and where the
field sits: its group and row, `json_schema_extra` on the field), and the conversions between the form's values and
a spec. The Train tab, presets and clone-and-edit all go through here; a new spec option appears without an edit
here (docs/architecture.md, "How to add a spec option")."""

from __future__ import annotations

import html
import typing
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import gradio as gr
from pydantic import BaseModel

from app.web.safe_text import SafeMarkdown
from jobs.models.contents import LINEAR, lora_targets
from jobs.models.resolve import base_module_kinds
from jobs.spec import (
    ADAPTER_FIELDS,
    ALL_DEVICES,
    DEMO_BASE_MODEL,
    FORM_GROUPS,
    HEAD,
    TARGET_PRESETS,
    Problem,
    TrainSpec,
    applies,
    conditional,
    field_default,
    field_help,
    field_label,
    form_place,
    short_help,
)
from jobs.studio import Studio

INTEGERS = (int, int | None)
SWITCH = {"auto": None, "on": True, "off": False}
"""A switch the default rule may choose (jobs.step_plan): auto leaves it to the rule."""
AUTO = "auto"
EVAL_FRACTIONS = [AUTO, "0", "0.05", "0.1", "0.2"]
"""eval_fraction's choices (any other number may be typed): a number box cannot tell 'auto' (empty) from 0 (no
eval split), because the browser sends an empty box as 0."""
DEVICE_CHOICES = ["1", "2", "4", "8", ALL_DEVICES]
"""devices' choices (any other count may be typed): a number box cannot hold 'all'."""
NO_ADAPTER = ("none", "")
"""An adapter picker's first choice: the field left empty (a new adapter; no reward model)."""
MULTILINE = ("grpo_json_schema", "grpo_reward_code")
"""Text fields a person pastes a file into (a schema, a reward function)."""
OPEN_TIER = "basic"
"""A group of this tier shows its knobs under the head row; the others are folded under ADVANCED."""
ADVANCED = "Advanced settings"
AUTO_NUMBERS = ("num_epochs", "learning_rate", "batch_size")
"""Number fields whose empty value means "chosen per job": a text box whose placeholder is the word auto (Gradio's
number box shows an empty value as 0, which read as zero epochs)."""
FIELD_CLASS = "spec-field"
DEFAULT_RUN = (field_default("method"), field_default("finetuning"))
"""The run a fresh form shows the fields of."""
ERROR_CLASS = "field-error"


@dataclass
class SpecForm:
    """The form's controls, in the order of `names` (spec field names)."""

    names: list[str]
    controls: list
    tips: gr.HTML | None = None
    """Every field's whole help, for the (i) tooltips (help_tips)."""
    containers: list[tuple[object, list[str]]] = dataclass_field(default_factory=list)
    """The rows and group accordions, each with the fields it holds: one whose fields all do not apply hides too."""
    show_fields: Callable | None = None
    """`show_fields(event)`: after `event`, show the fields the form's method and fine-tuning read (follow_method).
    For an event of another tab that fills the form (clone): a control there fires no change until its tab shows."""

    def control(self, name: str):
        return self.controls[self.names.index(name)]


def form_layout(spec_type: type[BaseModel] = TrainSpec) -> dict[str, list[list[str]]]:
    """The form's groups in FORM_GROUPS' order, each a list of rows of field names in the class's order; the head
    row (name, base, dataset) under HEAD."""
    rows: dict[str, dict[int, list[str]]] = {HEAD: {}, **{group: {} for group in FORM_GROUPS}}
    for name, field in spec_type.model_fields.items():
        if (where := form_place(field)) is None:
            continue
        group, row = where
        if group not in rows:
            raise ValueError(f"spec field {name!r} names the form group {group!r}; the groups are {list(rows)}")
        rows[group].setdefault(row, []).append(name)
    return {group: [found[row] for row in sorted(found)] for group, found in rows.items() if found}


def component(name: str, spec_type: type[BaseModel] = TrainSpec, **overrides):
    """A form control for a spec field, chosen from its type; label and help come from the spec."""
    field = spec_type.model_fields[name]
    # One line of help under the field; the whole help is its tooltip (help_tips), so the spec says it once. A field
    # the default run does not read starts hidden (follow_method shows it for the runs that read it).
    common = dict(label=field_label(name, spec_type), info=short_help(name, spec_type), elem_classes=[FIELD_CLASS],
                  elem_id=field_id(name), visible=applies(field, *DEFAULT_RUN), **overrides)
    if name == "target_modules":
        return gr.Dropdown(choices=list(TARGET_PRESETS), value=[field.default], multiselect=True,
                           allow_custom_value=True, **common)
    if name in AUTO_NUMBERS:
        return gr.Textbox(value="" if field.default is None else f"{field.default:g}", placeholder=AUTO, **common)
    if name == "eval_fraction":
        return gr.Dropdown(choices=EVAL_FRACTIONS, value=AUTO, allow_custom_value=True, **common)
    if name == "devices":
        return gr.Dropdown(choices=DEVICE_CHOICES, value=str(field.default), allow_custom_value=True, **common)
    if name == "eval_dataset":
        return gr.Dropdown(choices=eval_choices([]), value="", **common)
    if name in ADAPTER_FIELDS:  # the choices follow the base and method (tab.fresh_adapter_choices); a typed name
        return gr.Dropdown(choices=[NO_ADAPTER], value="", allow_custom_value=True, **common)  # is checked at submit
    if name == "modules_to_save":
        return gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True, **common)
    if name in MULTILINE:
        return gr.Textbox(value=field.default, lines=4, max_lines=30, **common)
    if "choices" in overrides or typing.get_origin(field.annotation) is typing.Literal:
        choices = common.pop("choices", None) or list(typing.get_args(field.annotation))
        return gr.Dropdown(choices=choices, value=common.pop("value", field.default), **common)
    if field.annotation is bool:
        return gr.Checkbox(value=field.default, **common)
    if field.annotation == bool | None:
        return gr.Dropdown(choices=list(SWITCH), value=switch_word(field.default), **common)
    if field.annotation in (int, int | None):
        return gr.Number(value=field.default, precision=0, **common)
    if field.annotation in (float, float | None):
        return gr.Number(value=field.default, **common)
    if field.annotation == list[str]:  # typed as comma-separated entries (the spec splits them)
        return gr.Textbox(value=", ".join(field.default_factory()), **common)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return gr.Textbox(value=field.default, lines=extra.get("lines", 1), **common)


def field_id(name: str) -> str:
    return f"field-{name}"


def help_tips(names: list[str], spec_type: type[BaseModel] = TrainSpec) -> gr.HTML:
    """Every field's whole help (range and spec field name included), hidden: static/studio.js gives each field a
    small (i) button, reachable by keyboard, whose tooltip is this text. The text is the spec's own, escaped."""
    items = "".join(f'<span data-field="{html.escape(name)}">{html.escape(field_help(name, spec_type))}</span>'
                    for name in names)
    return gr.HTML(f'<div id="field-help-text" hidden>{items}</div>', elem_id="field-help", padding=False)


def switch_word(value: bool | None) -> str:
    return next(word for word, meaning in SWITCH.items() if meaning is value)


def eval_choices(names: list[str]) -> list[tuple[str, str]]:
    """The validation dataset choices: none (hold out eval_fraction), then every stored dataset."""
    return [("none: hold out eval fraction", ""), *((name, name) for name in names)]


def build_groups(first_row: list, spec_type: type[BaseModel] = TrainSpec, *, between=None) -> SpecForm:
    """Lay out the grouped fields after `first_row` (the head row's controls, already built by the tab, which gives
    them their choices): the basic groups' rows open, then the advanced groups, each its own accordion, folded under
    one ADVANCED accordion. `between`: called after the basic rows (the tab puts its Submit button there, so Start
    is on screen without scrolling)."""
    layout = form_layout(spec_type)
    form = SpecForm(names=[name for row in layout.pop(HEAD) for name in row], controls=list(first_row))

    def place(rows: list[list[str]]) -> None:
        for row in rows:
            with gr.Row(equal_height=True, visible=_any_applies(row, spec_type)) as block:
                for name in row:
                    form.names.append(name)
                    form.controls.append(component(name, spec_type))
            form.containers.append((block, row))

    for title, rows in layout.items():
        if FORM_GROUPS[title] == OPEN_TIER:
            place(rows)
    if between is not None:
        between()
    with gr.Accordion(ADVANCED, open=False, elem_id="advanced-settings"):
        for title, rows in layout.items():
            if FORM_GROUPS[title] != OPEN_TIER:
                names = [name for row in rows for name in row]
                with gr.Accordion(title, open=True, visible=_any_applies(names, spec_type),
                                  elem_id=group_id(title)) as block:
                    place(rows)
                form.containers.append((block, names))
    form.tips = help_tips(form.names, spec_type)
    if {"method", "finetuning"} <= set(form.names):
        follow_method(form, spec_type)
    return form


def group_id(title: str) -> str:
    return "group-" + "-".join(title.lower().split())


def _any_applies(names: list[str], spec_type: type[BaseModel] = TrainSpec, run: tuple[str, str] = ()) -> bool:
    fields = spec_type.model_fields
    return any(applies(fields[name], *(run or DEFAULT_RUN)) for name in names)


def follow_method(form: SpecForm, spec_type: type[BaseModel] = TrainSpec) -> None:
    """Show only the fields the chosen method and fine-tuning read (the spec's `methods` / `finetuning` on each
    field), with the rows and groups that hold them; the hidden ones keep their values, which are still sent and
    validated. Clone-and-edit and presets set the method like a person does, so they show its fields too."""
    fields = spec_type.model_fields
    always = {name for name in form.names if not conditional(fields[name])}
    # The groups first: a whole group (LoRA under full or freeze) is what a person sees go.
    groups = [(block, names) for block, names in form.containers if not always & set(names)]
    shown = sorted(groups, key=lambda found: not isinstance(found[0], gr.Accordion))
    shown += [(form.control(name), [name]) for name in form.names if name not in always]

    def visibility(method: str, finetuning: str) -> list:
        return [gr.update(visible=_any_applies(names, spec_type, (method, finetuning))) for _, names in shown]

    run, blocks = [form.control("method"), form.control("finetuning")], [block for block, _ in shown]
    quiet = dict(api_visibility="private", show_progress="hidden")
    for control in run:
        control.change(visibility, run, blocks, **quiet)
    form.show_fields = lambda event: event.then(visibility, run, blocks, **quiet)


def target_choices(studio: Studio, base_model: str) -> list[str]:
    """The presets, then every module of the chosen base that LoRA can adapt (none listed when unknown yet)."""
    return list(TARGET_PRESETS) + lora_targets(_kinds(studio, base_model))


def _kinds(studio: Studio, base_model: str) -> dict[str, str]:
    settings = studio.settings
    return base_module_kinds(base_model or DEMO_BASE_MODEL, settings.models_dir, settings.model_dirs) or {}


def form_targets(picked: list[str] | str | None, studio: Studio, base_model: str) -> str | list[str]:
    """The picked chips as a spec value: one preset stays a preset; a mix becomes the list of module names."""
    picked = [picked] if isinstance(picked, str) else list(picked or [])
    if len(picked) == 1 and picked[0] in TARGET_PRESETS:
        return picked[0]
    kinds = _kinds(studio, base_model)
    names: list[str] = []
    for chip in picked:
        if chip == "all-linear":
            names += [n for n in lora_targets(kinds) if kinds[n] == LINEAR and n != "lm_head"]
        elif isinstance(TARGET_PRESETS.get(chip), list):
            names += TARGET_PRESETS[chip]
        else:
            names += [part.strip() for part in chip.split(",")]  # a typed list stays what was typed
    return list(dict.fromkeys(names))


def spec_from_form(studio: Studio, names: list[str], values: list) -> dict:
    """Form values to a raw spec dict; validation happens in one place (jobs.submit)."""
    raw = {}
    for name, value in zip(names, values, strict=True):
        annotation = TrainSpec.model_fields[name].annotation
        if isinstance(value, float) and value.is_integer() and annotation in INTEGERS:
            value = int(value)
        if annotation == bool | None and value in SWITCH:
            value = SWITCH[value]
        if name == "devices" and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if name == "eval_fraction" or name in AUTO_NUMBERS:
            value = eval_fraction_value(value)
            if isinstance(value, float) and value.is_integer() and annotation in INTEGERS:
                value = int(value)
        elif annotation in (int | None, float | None) and not value:
            value = None  # the browser sends an empty number box as 0; empty means "chosen per job"
        raw[name] = value
    if "target_modules" in raw:
        raw["target_modules"] = form_targets(raw["target_modules"], studio, raw.get("base_model", ""))
    return _shown_only(raw)


def _shown_only(raw: dict) -> dict:
    """The fields the chosen run reads: a field the form hides for this method and fine-tuning keeps its value on the
    page (for a switch back) but is not sent, so submit never refuses a field the person cannot see."""
    run = (raw.get("method") or field_default("method"), raw.get("finetuning") or field_default("finetuning"))
    return {name: value for name, value in raw.items() if applies(TrainSpec.model_fields[name], *run)}


def eval_fraction_value(value: object) -> object:
    """An "auto" control's value (eval fraction, epochs, learning rate, batch size) as a spec value: 'auto' or empty
    is None (chosen per job), a number typed as text is that number; anything else stays as it is, for validation to
    name."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTO)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


TEXT_LISTS = {name for name, field in TrainSpec.model_fields.items()
              if field.annotation == list[str] and name != "modules_to_save"}
"""List fields the form shows as one comma-separated text box (modules_to_save has chips of its own)."""


def form_values(spec: dict, names: list[str]) -> list:
    """Control values showing `spec` (missing fields at their defaults): for presets and clone-and-edit."""
    defaults = TrainSpec().model_dump(mode="json")
    values = []
    for name in names:
        value = spec.get(name, defaults[name])
        if name == "target_modules" and isinstance(value, str):
            value = [value]
        elif TrainSpec.model_fields[name].annotation == bool | None and (value is None or isinstance(value, bool)):
            value = switch_word(value)
        elif name in AUTO_NUMBERS:
            value = "" if value is None else f"{value:g}" if isinstance(value, int | float) else value
        elif name == "devices":
            value = str(value)
        elif name == "eval_fraction":
            value = AUTO if value is None else f"{value:g}" if isinstance(value, int | float) else value
        elif name in TEXT_LISTS and isinstance(value, list):
            value = ", ".join(map(str, value))
        values.append(value)
    return values


def field_updates(names: list[str], problems: list[Problem]) -> list:
    """Outline each refused field and show its message in place of the help; restore the others."""
    messages: dict[str, list[str]] = {}
    for problem in problems:
        messages.setdefault(problem.field.split(".")[0], []).append(problem.message)
    updates = []
    for name in names:
        if name in messages:
            updates.append(gr.update(elem_classes=[FIELD_CLASS, ERROR_CLASS],
                                     info="⚠ " + "; ".join(messages[name]) + f" — {short_help(name)}"))
        else:
            updates.append(gr.update(elem_classes=[FIELD_CLASS], info=short_help(name)))
    return updates


def problems_summary(problems: list[Problem], heading: str) -> str:
    lines = [f"**{heading}: {len(problems)} problem(s) to fix.**"]
    for problem in problems:
        field = problem.field.split(".")[0]
        label = field_label(field) if field in TrainSpec.model_fields else field
        lines.append(f"- **{label}** (`{problem.field}`): {problem.message}")
    return "\n".join(lines)


def live_panel(studio: Studio, form: SpecForm, app: gr.Blocks, fields: tuple[str, ...], render, elem_id: str):
    """A Markdown beside the form, rendered by `render(studio, raw spec)` from the form's values on page load and
    whenever one of `fields` changes."""
    panel = SafeMarkdown(elem_id=elem_id, folds=True)  # the memory verdict folds its breakdown away

    def refresh(*values):
        return render(studio, spec_from_form(studio, form.names, list(values)))

    quiet = dict(api_visibility="private", show_progress="hidden")
    for name in fields:
        form.control(name).change(refresh, form.controls, panel, **quiet)
    app.load(refresh, form.controls, panel, **quiet)
    return panel
