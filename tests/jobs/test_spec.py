import pytest
from pydantic import ValidationError

from jobs.spec import SpecError, TrainSpec, field_default, field_help, field_problem, parse_spec
from jobs.spec_words import bounds, range_words, special


def test_defaults_are_valid_and_stored_verbatim():
    spec = parse_spec({})
    assert spec.quantization == "nf4" and spec.double_quant and spec.target_modules == "all-linear"
    assert TrainSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"lora_r": 0}, "lora_r", "from 1 to 1024"),
    ({"lora_r": -4}, "lora_r", "from 1 to 1024"),
    ({"lora_r": 2.5}, "lora_r", "integer"),
    ({"lora_r": "eight"}, "lora_r", "integer"),
    ({"lora_alpha": 0}, "lora_alpha", "greater than 0"),
    ({"lora_dropout": 1.0}, "lora_dropout", "below 1"),
    ({"target_modules": ""}, "target_modules", "at least one module"),
    ({"target_modules": ["q_proj", "bad name!"]}, "target_modules", "not a module name"),
    ({"quantization": "q3"}, "quantization", "'nf4'"),
    ({"compute_dtype": "float8"}, "compute_dtype", "'float32'"),
    ({"quantization": "int8", "double_quant": True}, "double_quant", "4-bit"),
    ({"max_steps": 0}, "max_steps", "-1 (use num_epochs) or from 1 to 10,000,000"),
    ({"learning_rate": 0}, "learning_rate", "greater than 0"),
    ({"batch_size": 0}, "batch_size", "from 1"),
    ({"max_length": 4}, "max_length", "from 16"),
    ({"eval_fraction": 0.5}, "eval_fraction", "below 0.5"),
    ({"name": "bad/name"}, "name", "letters, digits"),
    ({"lora_rank": 8}, "lora_rank", "not a spec field"),
])
def test_each_bad_field_is_named(raw, field, words):
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert [p.field for p in caught.value.problems] == [field]
    assert words in caught.value.problems[0].message


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as caught:
        parse_spec({"lora_r": 0, "quantization": "q3", "lora_dropout": 2, "typo": 1, "max_steps": "x"})
    assert {p.field for p in caught.value.problems} == {"lora_r", "quantization", "lora_dropout", "typo", "max_steps"}
    assert "5 problem(s)" in caught.value.as_text()


@pytest.mark.parametrize(("given", "expected"), [
    ("attention", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("all-linear", "all-linear"),
    ("q_proj, v_proj", ["q_proj", "v_proj"]),
    (["gate_proj", "up_proj"], ["gate_proj", "up_proj"]),
])
def test_target_module_presets_and_lists(given, expected):
    assert parse_spec({"target_modules": given}).target_module_names() == expected


def test_not_an_object():
    with pytest.raises(SpecError, match="JSON object"):
        parse_spec(["lora_r", 8])


@pytest.mark.parametrize("fields", [{"lora_r": 0}, {"max_steps": 0}, {"max_steps": -5}, {"eval_fraction": 0.5},
                                    {"quantization": "int8"}, {"quantization": "none", "double_quant": True}])
def test_an_invalid_spec_cannot_be_constructed(fields):
    with pytest.raises(ValidationError):
        TrainSpec(**fields)


def test_the_special_values_and_4bit_rules_still_allow_what_is_right():
    assert TrainSpec(max_steps=-1).max_steps == -1 and TrainSpec(max_steps=1).max_steps == 1
    assert TrainSpec(quantization="int8", double_quant=False).quantization == "int8"


def _bounded_fields():
    return [name for name, field in TrainSpec.model_fields.items() if bounds(field)]


@pytest.mark.parametrize("name", _bounded_fields())
def test_every_bound_is_refused_in_the_words_of_the_field_itself(name):
    """The words come from the field's own constraints (no second table): just outside each bound is refused, and
    the message is the field's range_words."""
    field = TrainSpec.model_fields[name]
    limits = bounds(field)
    low = limits.get("ge", limits.get("gt"))
    high = limits.get("le", limits.get("lt"))
    outside = [value for value in (low - 1 if "ge" in limits else low, high + 1 if "le" in limits else high)
               if value is not None and value != (special(field) or {}).get("value")]
    for value in outside:
        with pytest.raises(SpecError) as caught:
            parse_spec({name: value})
        assert [str(p) for p in caught.value.problems] == [f"{name}: must be {range_words(field)} (got {value})"]


def test_the_help_says_the_allowed_values():
    assert "Allowed: a whole number from 1 to 1024." in field_help("lora_r")
    assert "Allowed: -1 (use num_epochs) or from 1 to 10,000,000." in field_help("max_steps")
    assert "Allowed" not in field_help("quantization")  # its choices are the control's own


def test_one_field_can_be_checked_alone_and_its_default_read():
    assert field_problem("max_length", 8) == "must be a whole number from 16 to 131072 (got 8)"
    assert field_problem("max_length", 1024) is None
    assert field_default("max_length") == TrainSpec().max_length


def test_a_text_over_its_length_is_refused_in_the_studios_words():
    with pytest.raises(SpecError) as caught:
        parse_spec({"chat_template": "{{ x }}" * 5000, "name": "a" * 101})
    problems = {p.field: p.message for p in caught.value.problems}
    assert problems == {"chat_template": "must be at most 32,000 characters (got 35,000)",
                        "name": "must be at most 100 characters (got 101)"}
