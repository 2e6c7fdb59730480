"""API and CLI parity, derived from the code: the page's controls (the Blocks' events), the public endpoints (the
`gr.api` registrations) and the CLI's verbs (the argparse tree of `python -m jobs`). A control with no endpoint, an
endpoint with no verb or no row in docs/api.md, or a verb whose arguments drift from its endpoint's fails here. No
server runs: the app is built once and read."""

from __future__ import annotations

import argparse
import inspect
import re

import gradio as gr
import pytest

from app.web.api import UI_ACTIONS
from jobs.cli.main import build_parser
from jobs.data.formats import FORMATS
from tests.conftest import REPO_ROOT

PAGE_EVENTS = {"load", "tick", "focus", "expand"}
"""The page refreshing itself (lists on load, timers, a dropdown's choices on focus): what they show is what the
endpoints below read."""

PAGE_ONLY = {
    "Train › Load a JSON/YAML file": "reads a file on the person's machine into the form; a client has the file "
                                      "and sends its fields (submit_job, save_preset)",
    "Datasets › dataset-upload": "fills the format and column pickers from an upload; import_dataset proposes "
                                   "the same mapping itself when none is given",
    "Datasets › dataset-format": "re-offers the column pickers for the format picked (the form's own state)",
    "Chat › pane-0": "lays the panes out for the adapters picked (the page's layout)",
    "Chat › chat-stop": "stops the page's stream; a client stops its own call (gradio_client's Job.cancel)",
    "Chat › chat-clear": "clears the panes (nothing is stored)",
    "Train › group-lora": "shows only the fields the chosen method and fine-tuning read, the LoRA group among "
                          "them (the page's layout); a client sends the fields it means and the spec checks them all",
    "Train › plan-hold-out": "sets the form's eval fraction to 0.1 (the plan's safer choice for small data); a "
                             "client sends eval_fraction itself (plan_job's sentence says the same)",
}
"""Controls with no endpoint, each for a reason (reviewed: add one only with its reason)."""

CLI_ONLY = {"worker": "runs a worker process on this host: not an action on a studio"}
NO_VERB: dict[str, str] = {}
"""Endpoints without a verb (none: every endpoint has one)."""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from app.web.server import build_app
    from jobs.studio import open_studio
    from storage.settings import load_settings

    data_dir = tmp_path_factory.mktemp("parity") / "data"
    studio = open_studio(load_settings({"STUDIO_DATA_DIR": str(data_dir)}))
    yield build_app(studio)
    studio.db.dispose()


def _tab(block) -> str:
    while block is not None and not isinstance(block, gr.Tab):
        block = getattr(block, "parent", None)
    return block.label if block is not None else "-"


def _name(block) -> str:
    text = block.value if isinstance(block, gr.Button) else getattr(block, "label", None)
    return getattr(block, "elem_id", None) or text or type(block).__name__


def page_controls(app: gr.Blocks) -> set[str]:
    """Every control a person acts on, as "tab › control": a button or input by its elem_id or text; a view that
    follows the form (a `change`) by the view it refreshes."""
    found = set()
    for fn in app.fns.values():
        for block_id, event in fn.targets:
            block = app.blocks.get(block_id)
            if (block is None or event in PAGE_EVENTS or isinstance(block, gr.Tab)
                    or (event == "select" and isinstance(block, gr.Dataframe))):  # picking a row fills a field
                continue
            shown = fn.outputs[0] if event == "change" and fn.outputs else block
            found.add(f"{_tab(block)} › {_name(shown)}")
    return found


def public_endpoints(app: gr.Blocks) -> dict[str, inspect.Signature]:
    return {fn.api_name: inspect.signature(fn.fn) for fn in app.fns.values() if fn.api_visibility == "public"}


def cli_verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _parameters(signature: inspect.Signature) -> list[str]:
    return [name for name, p in signature.parameters.items() if p.annotation not in (gr.Request, "gr.Request")]


def test_every_control_of_the_page_has_an_endpoint(page):
    controls = page_controls(page)
    missing = sorted(controls - set(UI_ACTIONS) - set(PAGE_ONLY))
    assert not missing, f"controls with no endpoint (app/web/api.py UI_ACTIONS, or PAGE_ONLY with a reason): {missing}"
    stale = sorted((set(UI_ACTIONS) | set(PAGE_ONLY)) - controls)
    assert not stale, f"no such control on the page any more: {stale}"
    endpoints = public_endpoints(page)
    unknown = {name for names in UI_ACTIONS.values() for name in names} - set(endpoints)
    assert not unknown, f"UI_ACTIONS names endpoints that are not registered: {unknown}"


def test_every_endpoint_has_a_verb_and_every_verb_an_endpoint(page):
    endpoints = public_endpoints(page)
    verbs = cli_verbs()
    served = {}
    for name, parser in verbs.items():
        endpoint = parser.get_default("endpoint")
        assert endpoint or name in CLI_ONLY, f"`python -m jobs {name}` mirrors no endpoint"
        if endpoint:
            assert endpoint in endpoints, f"`{name}` names the endpoint '{endpoint}', which is not registered"
            served[endpoint] = name
    missing = sorted(set(endpoints) - set(served) - set(NO_VERB))
    assert not missing, f"endpoints with no `python -m jobs` verb: {missing}"


def test_each_verb_sends_its_endpoints_parameters(page):
    """A declared verb's arguments are its endpoint's parameters, so --url calls it right."""
    endpoints = public_endpoints(page)
    for name, parser in cli_verbs().items():
        verb = parser.get_default("verb")
        if verb is None:
            continue
        sent = [arg.name for arg in verb.args if arg.api]
        assert sent == _parameters(endpoints[verb.endpoint]), name


def test_the_api_doc_lists_every_endpoint_with_its_arguments_and_every_verb(page):
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    rows = dict(re.findall(r"^\| `/(\w+)` \|([^|]*)\|", doc, flags=re.M))
    endpoints = public_endpoints(page)
    assert set(rows) == set(endpoints), "docs/api.md's endpoint table differs from the registered endpoints"
    for name, signature in endpoints.items():
        for parameter in _parameters(signature):
            assert f"`{parameter}`" in rows[name], f"docs/api.md: /{name} does not describe `{parameter}`"
    for verb, parser in cli_verbs().items():
        line = re.search(rf"^python -m jobs {re.escape(verb)}\b.*$", doc, flags=re.M)
        assert line, f"docs/api.md's CLI section does not show `{verb}`"
        remote_only = parser.get_default("func") is None
        assert ("*remote*" in line.group()) == remote_only, f"docs/api.md: mark `{verb}` *remote* iff it needs --url"


def test_the_api_doc_lists_every_dataset_format():
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    listed = re.findall(r"^\| (\w[\w-]*) \| `", doc.split("## Datasets", 1)[1], flags=re.M)
    assert sorted(listed) == sorted(FORMATS)
