"""The docs stay in step with the code they describe."""

from jobs.spec import TrainSpec
from tests.conftest import REPO_ROOT


def test_api_doc_lists_every_spec_field_with_its_help():
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    for name, field in TrainSpec.model_fields.items():
        assert f"| `{name}` |" in doc and field.description in doc, name


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    test_command = "python -m pip install -q -r requirements.txt && python -m ruff check . && python -m pytest"
    assert "python -m pip install -r requirements.txt && python -m app" in readme
    assert test_command in readme and test_command in ci
