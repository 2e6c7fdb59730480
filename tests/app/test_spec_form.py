"""The form's eval fraction: 'auto' (the rule chooses) and 0 (no eval split) stay apart on the way to a spec and
back, which a number box cannot do (the browser sends an empty box as 0)."""

import pytest

from app.spec_form import AUTO, eval_fraction_value, form_values, spec_from_form
from jobs.spec import SpecError, parse_spec


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


@pytest.mark.parametrize(("spec", "shown"), [({}, AUTO), ({"eval_fraction": None}, AUTO),
                                             ({"eval_fraction": 0}, "0"), ({"eval_fraction": 0.1}, "0.1")])
def test_a_preset_or_cloned_run_shows_its_eval_fraction(spec, shown):
    assert form_values(spec, ["eval_fraction"]) == [shown]
