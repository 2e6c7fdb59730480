"""The step plan beside the training form: how many optimizer steps the job will make over how many tokens, and the
values the default rule chose for fields left empty (jobs.step_plan). Recomputed from the form on every change;
only a tokenizer is loaded, never weights.

The same refresh writes each "auto" field's resolved value into its help line ("auto: 3.2e-3 for
smollm2-135m-instruct"), so an empty field reads as the value the job will use, never as a zero."""

from __future__ import annotations

import gradio as gr

from app.train.spec_form import SpecForm, spec_from_form
from app.web.safe_text import SafeMarkdown
from jobs.spec import SpecError, parse_spec, short_help
from jobs.step_plan import StepPlan
from jobs.studio import Studio
from jobs.submit import data_shape_problem, planned_job

PLAN_FIELDS = ("base_model", "dataset", "max_steps", "num_epochs", "learning_rate", "batch_size", "grad_accum",
               "max_length", "packing", "eval_fraction", "eval_dataset", "overlong", "method", "memory_budget_gib",
               "gradient_checkpointing", "finetuning", "freeze_trainable_layers", "freeze_train_head", "devices",
               "pool")
AUTO_FIELDS = ("num_epochs", "learning_rate", "batch_size", "eval_fraction")
SAFER_EVAL_FRACTION = "0.1"
"""The memorising warning's one-click choice (one of the eval fraction field's choices)."""
"""The fields where empty means "chosen per job": their help line names the value chosen."""


def plan_text(studio: Studio, raw: dict) -> str:
    return plan_parts(studio, raw)[0]


def plan_parts(studio: Studio, raw: dict) -> tuple[str, StepPlan | None]:
    try:
        spec = parse_spec(raw)
    except SpecError:
        return "*Plan: fix the form's problems to see how long the job trains.*", None
    if problem := data_shape_problem(studio, spec):
        return f"*Plan: {problem}.*", None
    step_plan = planned_job(studio, spec)
    if not step_plan.sequences_per_epoch:
        return f"*Plan: no dataset named `{raw.get('dataset', '')}` yet.*", None
    warning = step_plan.memorising_warning()
    # The memory levers' sentence is the verdict's first line beside it (app.train.memory_panel): said once, there.
    return (f"**Plan.** {step_plan.sentence(warn=False, memory=False)}"
            + (f"\n\n**Could memorise.** {warning}" if warning else "")), step_plan


def number_words(value: float) -> str:
    """A chosen value as a person writes it: 3.2e-3 rather than 0.0032, 2 epochs rather than 2.0."""
    if 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return f"{value:g}"


def auto_info(name: str, step_plan: StepPlan | None) -> str:
    """The field's help line: 'auto: <value> for <base>. <help>' when the plan chose its value, else the help."""
    if step_plan is None or name not in step_plan.chosen:
        return short_help(name)
    spec = step_plan.spec
    value = getattr(spec, name)
    if name == "eval_fraction":
        held = (f"{step_plan.eval_rows:,} of {step_plan.eval_rows + step_plan.train_rows:,} rows held out"
                if step_plan.eval_rows else f"no rows held out of {step_plan.train_rows:,}")
        return f"auto: {number_words(value)} ({held}). {short_help(name)}"
    for_what = f" for {spec.base_model}" if name == "learning_rate" else " for this data"
    return f"auto: {number_words(value)}{for_what}. {short_help(name)}"


def build(studio: Studio, form: SpecForm, app: gr.Blocks):
    """The plan panel; returns `follow(event)`, which refreshes the plan and the auto fields' lines after `event` (a
    submit rewrites every field's line: a refused field's message, the others' help)."""
    panel = SafeMarkdown(elem_id="step-plan")
    # The plan's safer choice for small data, in one click: a held-out tenth (the eval fraction field's own choice).
    hold_out = gr.Button(f"Hold out a tenth for eval (eval fraction {SAFER_EVAL_FRACTION})", visible=False,
                         size="sm", elem_id="plan-hold-out")
    autos = [form.control(name) for name in AUTO_FIELDS]
    outputs = [panel, hold_out, *autos]

    def refresh(*values):
        text, step_plan = plan_parts(studio, spec_from_form(studio, form.names, list(values)))
        return (text, gr.update(visible=bool(step_plan and step_plan.may_memorise)),
                *(gr.update(info=auto_info(name, step_plan)) for name in AUTO_FIELDS))

    def after_submit(*values):
        # Only the fields left on auto: a field with a value keeps what the submit wrote (its refusal, or its help).
        raw = spec_from_form(studio, form.names, list(values))
        text, step_plan = plan_parts(studio, raw)
        return (text, gr.update(visible=bool(step_plan and step_plan.may_memorise)),
                *(gr.update(info=auto_info(name, step_plan)) if raw[name] is None else gr.update()
                  for name in AUTO_FIELDS))

    quiet = dict(api_visibility="private", show_progress="hidden")
    for name in PLAN_FIELDS:
        form.control(name).change(refresh, form.controls, outputs, **quiet)
    app.load(refresh, form.controls, outputs, **quiet)
    # Setting the field fires its change, which refreshes the plan (and hides this button).
    hold_out.click(lambda: SAFER_EVAL_FRACTION, None, form.control("eval_fraction"), **quiet)
    return lambda event: event.then(after_submit, form.controls, outputs, **quiet)
