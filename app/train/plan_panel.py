"""The step plan beside the training form: how many optimizer steps the job will make over how many tokens, and the
values the default rule chose for fields left empty (jobs.step_plan). Recomputed from the form on every change;
only a tokenizer is loaded, never weights."""

from __future__ import annotations

import gradio as gr

from app.train.spec_form import SpecForm, live_panel
from jobs.spec import SpecError, parse_spec
from jobs.studio import Studio
from jobs.submit import planned_job

PLAN_FIELDS = ("base_model", "dataset", "max_steps", "num_epochs", "learning_rate", "batch_size", "grad_accum",
               "max_length", "packing", "eval_fraction", "eval_dataset", "overlong", "method", "memory_budget_gib",
               "gradient_checkpointing")


def plan_text(studio: Studio, raw: dict) -> str:
    try:
        step_plan = planned_job(studio, parse_spec(raw))
    except SpecError:
        return "*Plan: fix the form's problems to see how long the job trains.*"
    if not step_plan.sequences_per_epoch:
        return f"*Plan: no dataset named `{raw.get('dataset', '')}` yet.*"
    return f"**Plan.** {step_plan.sentence()}"


def build(studio: Studio, form: SpecForm, app: gr.Blocks) -> None:
    live_panel(studio, form, app, PLAN_FIELDS, plan_text, "step-plan")
