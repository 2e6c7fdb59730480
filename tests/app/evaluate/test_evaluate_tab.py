"""The Evaluate tab's pure parts: the form becomes the spec the API takes, the summary escapes what people named,
the chart leaves out metrics a pane has no value for. (The tab's wiring is checked by tests/app/web/test_parity.py;
the job and its results by tests/jobs/evaluate/test_eval_job.py.)"""

from app.evaluate.tab import chart_frame, form_spec, summary_text
from jobs.evaluate.spec import EvalSpec


def test_the_form_is_the_api_spec():
    spec = form_spec(["a", "b"], True, "held_out", 7, "ignored", "ignored", 50, 32, 0.0, 3)
    assert spec == {"adapters": ["a", "b"], "include_base": True, "source": "held_out", "max_rows": 50,
                    "max_new_tokens": 32, "temperature": 0.0, "seed": 3, "train_job": 7}
    assert EvalSpec.model_validate(spec).panes() == ["a", "b", "base"]
    assert form_spec([], False, "suite", None, "", "s", 1, 1, 0.5, 0)["suite"] == "s"


def test_summary_escapes_names_and_chart_skips_missing_values():
    found = {"set": "<script>x</script>", "base_model": "demo", "rows": 2, "rows_in_set": 5,
             "settings": {"temperature": 0.7, "seed": 4, "max_new_tokens": 8}, "best": {"loss": ["a"]},
             "table": [{"adapter": "a", "loss": 1.5}, {"adapter": "base", "loss": None}]}
    text = summary_text(found)
    assert "<script>" not in text and "seed 4" in text and "loss (reference tokens) (lower is better): a" in text
    assert chart_frame(found, "loss").to_dict(orient="records") == [{"adapter": "a", "value": 1.5}]
    bench = {"source": "benchmark", "set": "<img src=x onerror=alert(1)>", "base_model": "demo",
             "settings": {"num_fewshot": 1, "limit": 4, "seed": 0}, "best": {"t acc": ["a"]},
             "directions": {"t acc": True}}
    text = summary_text(bench)
    assert "<img" not in text and "1-shot" in text and "t acc (higher is better): a" in text


def test_a_picked_judge_sends_its_prompt_and_the_summary_names_it_escaped():
    from jobs.evaluate.judging import DEFAULT_JUDGE_PROMPT

    spec = form_spec(["a", "b"], False, "suite", None, "", "s", 1, 1, 0.0, 0, judge="a",
                     judge_prompt=DEFAULT_JUDGE_PROMPT, judge_max_tokens=16)
    assert EvalSpec.model_validate(spec).judge == "a" and spec["judge_prompt"] == DEFAULT_JUDGE_PROMPT
    assert spec["judge_max_tokens"] == 16
    assert "judge" not in form_spec(["a"], True, "suite", None, "", "s", 1, 1, 0.0, 0, judge="",
                                         judge_prompt="edited")
    found = {"set": "s", "base_model": "demo", "rows": 1, "rows_in_set": 1, "best": {},
             "settings": {"temperature": 0, "seed": 0, "max_new_tokens": 8}, "judging": {"judge": "<b>j</b>"}}
    assert "Judged" in summary_text(found) and "<b>" not in summary_text(found)
