"""The training form: its layout read from the spec fields (the page people know, and a new option appearing without
a UI edit), and the eval fraction: 'auto' (the rule chooses) and 0 (no eval split) stay apart on the way to a spec and
back, which a number box cannot do (the browser sends an empty box as 0)."""

import html
import re

import gradio as gr
import pytest
from pydantic import Field

from app.train.spec_form import (
    AUTO,
    build_groups,
    component,
    eval_fraction_value,
    form_layout,
    form_values,
    spec_from_form,
)
from jobs.spec import (
    HEAD,
    LORA_ONLY_FIELDS,
    SHORT_HELP_CHARS,
    SpecError,
    TrainSpec,
    applies,
    field_help,
    parse_spec,
    short_help,
)


@pytest.mark.parametrize(("shown", "value"), [(AUTO, None), ("", None), (None, None), (" Auto ", None),
                                              ("0", 0.0), (0, 0.0), ("0.2", 0.2), (0.05, 0.05)])
def test_the_control_value_becomes_the_spec_value(studio, shown, value):
    assert eval_fraction_value(shown) == value
    raw = spec_from_form(studio, ["eval_fraction"], [shown])
    assert raw == {"eval_fraction": value} and parse_spec(raw).eval_fraction == value


def test_a_word_is_refused_with_the_field_named(studio):
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_from_form(studio, ["eval_fraction"], ["a tenth"]))
    assert [problem.field for problem in refused.value.problems] == ["eval_fraction"]
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_from_form(studio, ["eval_fraction"], ["0.7"]))
    assert "below 0.5" in str(refused.value.problems[0])


def test_devices_take_a_count_or_all_and_show_them_back(studio):
    raw = spec_from_form(studio, ["devices"], ["all"])  # the dropdown's text: a count or the word
    assert spec_from_form(studio, ["devices"], ["2"]) == {"devices": 2} and raw == {"devices": "all"}
    assert parse_spec(raw).devices == "all" and form_values({"devices": 4}, ["devices"]) == ["4"]
    assert form_values({"devices": "all"}, ["devices"]) == ["all"]


@pytest.mark.parametrize(("spec", "shown"), [({}, AUTO), ({"eval_fraction": None}, AUTO),
                                             ({"eval_fraction": 0}, "0"), ({"eval_fraction": 0.1}, "0.1")])
def test_a_preset_or_cloned_run_shows_its_eval_fraction(spec, shown):
    assert form_values(spec, ["eval_fraction"]) == [shown]


THREE_LAYERS = {
    HEAD: [["name", "base_model", "dataset", "method"]],  # what every job needs
    "Common": [["num_epochs", "learning_rate", "batch_size", "eval_fraction"],  # the knobs most people turn
               ["lora_r", "quantization", "max_steps", "max_length"]],
    # everything else, folded under "Advanced settings"
    "LoRA": [["lora_alpha", "lora_dropout"], ["target_modules"],
             ["lora_bias", "use_rslora", "use_dora", "modules_to_save"],
             ["init_lora_weights", "pissa_niter", "loraplus_lr_ratio"]],
    "Optimisation": [["optimizer", "lr_scheduler", "weight_decay", "max_grad_norm"],
                     ["neftune_noise_alpha", "grad_accum", "warmup_ratio", "seed"]],
    "Data": [["overlong", "dedup", "eval_dataset"], ["dataset_mix", "max_rows", "loss_turns"],
             ["packing", "assistant_only_loss"], ["system_prompt", "chat_template"]],
    "Method options": [["init_adapter", "dpo_beta"],
                       ["orpo_lambda", "simpo_beta", "simpo_gamma_ratio", "kto_beta", "kto_desirable_weight",
                        "kto_undesirable_weight"], ["grpo_rewards", "num_generations", "max_completion_length",
                                                    "grpo_beta"],
                       ["grpo_reference_match", "grpo_min_chars", "grpo_max_chars", "grpo_reward_adapter"],
                       ["grpo_regex", "grpo_json_schema"],
                       ["grpo_reward_code"], ["finetuning", "freeze_trainable_layers", "freeze_train_head"]],
    "Precision and speed": [["double_quant", "compute_dtype", "gradient_checkpointing", "pack_length"],
                            ["attn_implementation", "torch_compile", "liger_kernel"], ["rope_scaling", "rope_factor"],
                            ["memory_budget_gib", "devices"]],
    "Checkpoints and tracking": [["eval_steps", "logging_steps", "save_steps", "sample_prompts"],
                                 ["early_stopping_patience", "keep_best", "pool", "report_to"]],
}
"""The Train tab in three layers (issue 33): what every job needs, the common knobs, then the rest by theme."""


def test_the_layout_read_from_the_fields_is_the_page_people_know():
    assert form_layout() == THREE_LAYERS


def test_every_spec_field_but_the_version_has_a_place_in_the_form():
    placed = {name for rows in form_layout().values() for row in rows for name in row}
    assert set(TrainSpec.model_fields) - placed == {"spec_version"}


class WithNewOption(TrainSpec):
    label_smoothing: float = Field(0.0, title="Label smoothing", ge=0, le=1, description="Soften the targets.",
                                   json_schema_extra={"group": "Optimisation", "row": 1})


def test_a_new_option_appears_in_the_form_from_its_metadata_alone():
    with gr.Blocks():
        head = [component(name, WithNewOption) for row in form_layout(WithNewOption)[HEAD] for name in row]
        form = build_groups(head, WithNewOption)
    assert form_layout(WithNewOption)["Optimisation"][1] == ["neftune_noise_alpha", "grad_accum", "warmup_ratio",
                                                             "seed", "label_smoothing"]
    control = form.control("label_smoothing")
    assert isinstance(control, gr.Number) and control.label == "Label smoothing" and control.value == 0.0
    assert control.info == "Soften the targets."  # one line; the whole help is its tooltip:
    assert "Soften the targets. Allowed: from 0 to 1. Spec field: label_smoothing." in html.unescape(
        form.tips.value)


def test_a_field_naming_an_unknown_group_is_refused_in_words():
    class Misplaced(TrainSpec):
        odd: int = Field(1, json_schema_extra={"group": "Nowhere"})

    with pytest.raises(ValueError, match="'odd' names the form group 'Nowhere'"):
        form_layout(Misplaced)


def test_each_field_shows_one_short_line_and_keeps_its_whole_help_for_the_tooltip():
    for name in (name for rows in form_layout().values() for row in rows for name in row):
        line, whole = short_help(name), field_help(name)
        assert line and len(line) <= SHORT_HELP_CHARS + 2 and "Spec field" not in line, (name, line)
        assert whole.startswith(line.removesuffix(" …")) and whole.endswith(f"Spec field: {name}."), name
    assert short_help("learning_rate") == "Peak learning rate (cosine decay after a short warmup)."
    assert short_help("target_modules").endswith(" …")  # cut at a clause where the first sentence runs long


def _shown(method: str, finetuning: str) -> set[str]:
    return {name for name, field in TrainSpec.model_fields.items() if applies(field, method, finetuning)}


LORA_FIELDS = {*LORA_ONLY_FIELDS, "quantization", "double_quant", "init_adapter"}
"""What a full or freeze run does not read: the adapter's shape, the quantized base, an adapter to continue."""
GRPO_FIELDS = {"grpo_rewards", "num_generations", "max_completion_length", "grpo_beta", "grpo_reference_match",
               "grpo_min_chars", "grpo_max_chars", "grpo_regex", "grpo_json_schema", "grpo_reward_code",
               "grpo_reward_adapter"}
METHOD_FIELDS = {"dpo": {"dpo_beta"}, "orpo": {"orpo_lambda"}, "simpo": {"simpo_beta", "simpo_gamma_ratio"},
                 "kto": {"kto_beta", "kto_desirable_weight", "kto_undesirable_weight"}, "grpo": GRPO_FIELDS,
                 "sft": {"packing", "loss_turns"}, "reward": set()}


@pytest.mark.parametrize("method", list(METHOD_FIELDS))
def test_a_method_shows_its_own_options_and_no_other_method_s(method):
    others = set().union(*METHOD_FIELDS.values()) - METHOD_FIELDS[method]
    shown = _shown(method, "lora")
    assert METHOD_FIELDS[method] <= shown and not others & shown
    assert shown >= LORA_FIELDS and not {"freeze_trainable_layers", "freeze_train_head"} & shown


def test_full_and_freeze_hide_what_only_an_adapter_run_reads():
    for finetuning in ("full", "freeze"):
        shown = _shown("sft", finetuning)
        assert not LORA_FIELDS & shown and {"finetuning", "learning_rate", "packing", "max_length"} <= shown
    assert {"freeze_trainable_layers", "freeze_train_head"} <= _shown("sft", "freeze")
    assert not {"freeze_trainable_layers", "freeze_train_head"} & _shown("sft", "full")


def test_a_help_saying_x_only_says_it_as_data_too():
    # The help's "dpo only." and the field's `methods` / `finetuning` cannot drift apart.
    said = {name: re.search(r"\b(\w+) only\.$", field.description or "") for name, field in
            TrainSpec.model_fields.items()}
    said = {name: found.group(1) for name, found in said.items() if found and found.group(1) in
            (*METHOD_FIELDS, "freeze")}
    assert len(said) >= 14, said
    for name, word in said.items():
        field = TrainSpec.model_fields[name]
        if word == "freeze":
            assert applies(field, "sft", "freeze") and not applies(field, "sft", "lora"), name
        else:
            other = "dpo" if word == "sft" else "sft"
            assert applies(field, word, "lora") and not applies(field, other, "lora"), name


def test_the_fresh_form_hides_what_the_default_run_does_not_read():
    with gr.Blocks():
        head = [component(name) for row in form_layout()[HEAD] for name in row]
        form = build_groups(head)
    hidden = {name for name, control in zip(form.names, form.controls, strict=True) if not control.visible}
    assert hidden == set(TrainSpec.model_fields) - _shown("sft", "lora") - {"spec_version"}
    # A row of one method's options hides with them; a row that mixes in a field every run reads never does.
    rows = {tuple(names): block.visible for block, names in form.containers}
    assert rows[("grpo_reward_code",)] is False and rows[("finetuning", "freeze_trainable_layers",
                                                           "freeze_train_head")] is True


def test_a_field_the_chosen_run_hides_is_not_sent(studio):
    """A reward adapter picked for a GRPO run, then the method switched to dpo: the field is hidden (keeping its value
    for a switch back) and the spec leaves it out, where submit would refuse it ('applies only when method is grpo')
    on a field the person cannot see; dpo's beta goes, as do the fields every run reads."""
    names = ["method", "finetuning", "grpo_reward_adapter", "dpo_beta", "freeze_trainable_layers", "lora_r"]
    raw = spec_from_form(studio, names, ["dpo", "lora", "a-scorer", 0.25, 3, 8])
    assert raw == {"method": "dpo", "finetuning": "lora", "dpo_beta": 0.25, "lora_r": 8}
    raw = spec_from_form(studio, names, ["sft", "freeze", "a-scorer", 0.25, 3, 8])
    assert raw == {"method": "sft", "finetuning": "freeze", "freeze_trainable_layers": 3}
