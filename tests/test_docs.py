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


SCALE_OUT = REPO_ROOT / "docs" / "scale-out"


def _env_file(path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_scale_out_recipe_names_only_settings_and_commands_that_exist():
    import re

    import yaml

    from app.__main__ import main as app_main  # noqa: F401 (the units start `python -m app --no-worker`)
    from storage.settings import load_settings

    compose = yaml.safe_load((SCALE_OUT / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "redis"}
    for service in compose["services"].values():  # bound to the private address only, never 0.0.0.0 by default
        assert all(port.startswith("${STUDIO_PRIVATE_IP") for port in service["ports"])

    env = _env_file(SCALE_OUT / "studio.env")
    settings = load_settings(env)  # the example settings load (pool name valid, URLs in the accepted forms)
    assert settings.database_url.startswith("postgresql+psycopg://") and settings.queue_url.startswith("redis://")
    assert settings.pool == "a100-80g" and str(settings.locks_dir) == "/var/lib/qlora-studio/locks"

    readers = [*(REPO_ROOT / "storage").glob("*.py"), REPO_ROOT / "app" / "__main__.py"]
    code = "\n".join(p.read_text() for p in readers)
    readme = (REPO_ROOT / "README.md").read_text()
    texts = [(SCALE_OUT.parent / "scale-out.md").read_text(), *(p.read_text() for p in SCALE_OUT.iterdir())]
    for name in set(re.findall(r"\bSTUDIO_[A-Z_]+\b", "\n".join(texts))) - {"STUDIO_PRIVATE_IP"}:
        assert f'"{name}"' in code, f"{name} is read nowhere"
        assert f"`{name}`" in readme, f"{name} is missing from the README's configuration table"
    for unit in ("studio-worker@.service", "studio-web.service"):
        text = (SCALE_OUT / unit).read_text()
        assert "EnvironmentFile=/etc/qlora-studio/studio.env" in text
        assert re.search(r"ExecStart=\S+ -m (jobs worker|app --no-worker)", text), unit
