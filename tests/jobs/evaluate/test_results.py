"""Shaping stored results for the table, the per-row view and the downloads (pure: no job runs here)."""

import csv
import io

from jobs.evaluate import results

STORED = {"panes": ["a", "base"], "best": {"chrf": ["a"]},
          "metrics": {"a": {"chrf": 50.0, "loss": None}, "base": {"chrf": 20.0, "loss": None}},
          "per_row": [{"row": 1, "disagreement": 0.6, "prompt": "=HYPERLINK(\"http://x\")", "reference": "ok",
                       "answers": {"a": "ok", "base": "-1+1"},
                       "scores": {"a": {"chrf": 100.0}, "base": {"chrf": 40.0}}},
                      {"row": 0, "disagreement": 0.0, "prompt": "p", "reference": None,
                       "answers": {"a": "x", "base": "x"}, "scores": {"a": {}, "base": {}}}]}


def test_table_marks_the_best_and_leaves_out_metrics_nobody_has():
    assert results.table(STORED) == [{"adapter": "a", "chrf": 50.0}, {"adapter": "base", "chrf": 20.0}]
    marked = results.table(STORED, mark="*")
    assert marked[0]["chrF"] == "50 *" and marked[1]["chrF"] == "20"


def test_row_view_keeps_the_stored_order_and_csv_defuses_formulas():
    view = results.row_view(STORED)
    assert [row["row"] for row in view] == [2, 1] and view[0]["a chrf"] == 100.0
    parsed = list(csv.DictReader(io.StringIO(results.as_csv(view))))
    assert parsed[0]["prompt"].startswith("'=") and parsed[0]["base"] == "'-1+1" and parsed[0]["a"] == "ok"
