"""The Train tab's "auto" fields read as the word with the value the plan chose for them, and the base picker says
each base's size and whether a default job fits here (both from the studio's real plan and memory arithmetic)."""

from app.train.base_picker import base_choices, size_words
from app.train.plan_panel import auto_info, number_words, plan_parts
from jobs.spec import DEMO_BASE_MODEL, EXAMPLE_DATASET, short_help


def test_an_empty_field_reads_auto_with_the_value_the_plan_chose(studio):
    text, plan = plan_parts(studio, {"base_model": DEMO_BASE_MODEL, "dataset": EXAMPLE_DATASET})
    assert plan is not None and text.startswith("**Plan.**")
    assert auto_info("learning_rate", plan).startswith(f"auto: 5e-3 for {DEMO_BASE_MODEL}. ")
    assert auto_info("eval_fraction", plan).startswith("auto: 0.1 (60 of 600 rows held out). ")
    assert auto_info("batch_size", plan).startswith(f"auto: {plan.spec.batch_size} for this data. ")
    assert auto_info("num_epochs", plan).startswith(f"auto: {plan.spec.num_epochs:g} for this data. ")
    # A value the person set is theirs: no "auto" beside it; nor without a plan (a form with problems).
    _, set_by_hand = plan_parts(studio, {"base_model": DEMO_BASE_MODEL, "learning_rate": 0.001})
    assert auto_info("learning_rate", set_by_hand) == short_help("learning_rate")
    assert auto_info("learning_rate", None) == short_help("learning_rate")


def test_chosen_values_are_written_as_people_write_them():
    assert [number_words(v) for v in (0.0032, 0.005, 0.0001, 2.0, 2.5, 0.1)] == [
        "3.2e-3", "5e-3", "1e-4", "2", "2.5", "0.1"]
    assert [size_words(n) for n in (134_515_008, 1_711_376_384, 2_000_000)] == ["135M", "1.7B", "2M"]


def test_the_base_picker_shows_size_and_fit_and_keeps_the_name_as_value(studio):
    labels = dict((value, label) for label, value in base_choices(studio))
    assert labels[DEMO_BASE_MODEL].startswith(f"{DEMO_BASE_MODEL} · ")
    assert labels[DEMO_BASE_MODEL].endswith(" · fits here")  # a tiny model on this machine
    assert " · " in labels["smollm2-135m-instruct"]  # its config is known before it is prepared


def test_the_plan_names_the_method_and_what_trains(studio):
    # A method given data of another shape: the plan says so before submit refuses it.
    text, plan = plan_parts(studio, {"base_model": DEMO_BASE_MODEL, "method": "grpo"})
    assert plan is None and text.startswith("*Plan: method grpo trains on a prompt/reference dataset")
    text, plan = plan_parts(studio, {"base_model": DEMO_BASE_MODEL, "finetuning": "freeze",
                                     "freeze_trainable_layers": 3})
    assert "Method sft: the base's last 3 decoder blocks train and the run saves a whole model" in text
