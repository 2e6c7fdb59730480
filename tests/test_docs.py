"""The docs stay in step with the code they describe."""

from jobs.spec import TrainSpec
from jobs.spec_docs import BEGIN, END, spec_table
from tests.conftest import REPO_ROOT


def test_api_doc_holds_the_spec_table_rendered_from_the_spec():
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    assert f"{BEGIN}\n{spec_table()}\n{END}" in doc, "run: python -m jobs.spec_docs docs/api.md"
    for name in TrainSpec.model_fields:
        assert f"| `{name}` |" in doc, name


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    test_command = "python -m pip install -q -r requirements.txt && python -m ruff check . && python -m pytest"
    assert "python -m pip install -r requirements.txt && python -m app" in readme
    assert test_command in readme and test_command in ci
