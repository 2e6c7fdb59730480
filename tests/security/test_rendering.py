"""Stored script injection, attempted for real: Alice plants markup that runs script (tests/security/payloads.py) in
every place the studio shows what a person or a model wrote: dataset rows (the Train preview, the Datasets view),
a prompt suite's prompts and references, a chat prompt, the answers of an adapter she trained to answer with
markup (chat panes, the suite grid, the run's sample answers, an evaluation's per-row view of her rows), and an error
that quotes what was typed. Then the
admin opens each in Chromium. The test fails if a dialog opens, an element carries an on* attribute, or a link,
source or action runs script; and it checks the markup is shown as text, not dropped."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import FAST_JOB
from tests.security.conftest import BASE, PASSWORD, chat_rows
from tests.security.payloads import PAGE_CHECK, PAYLOADS

pytestmark = [pytest.mark.slow, pytest.mark.browser]
sync_api = pytest.importorskip("playwright.sync_api")

from tests.app.test_browser import CHROMIUM as CHROMIUM_PATH  # noqa: E402
from tests.app.test_browser import CHROMIUM_ARGS, _missing, expect  # noqa: E402  (expect: with its longer wait)

MODEL_PAYLOAD = "<img src=x onerror=alert('model')>"
ONE_LINE = [p for p in PAYLOADS if "\n" not in p and "=>" not in p]


@pytest.fixture(scope="module")
def planted(team):
    """What Alice leaves for others to open (through the API, as she would from a script)."""
    from gradio_client import handle_file

    alice = team.client("alice")
    rows = team.root / "xss.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p},
                                                     {"role": "assistant", "content": p}]}) + "\n"
                            for p in PAYLOADS))
    alice.predict(handle_file(str(rows)), "alice-xss", api_name="/import_dataset")
    parrot = team.root / "parrot.jsonl"
    parrot.write_text(chat_rows(MODEL_PAYLOAD, count=16))
    alice.predict(handle_file(str(parrot)), "alice-parrot-data", api_name="/import_dataset")
    spec = {**FAST_JOB, "name": "alice-parrot", "dataset": "alice-parrot-data", "max_steps": 60,
            "learning_rate": 0.01, "eval_fraction": 0, "sample_prompts": 2, "eval_steps": 30, "save_steps": 30,
            "packing": False}
    job_id = alice.predict(json.dumps(spec), 0, api_name="/submit_job")
    assert team.wait("alice", job_id)["status"] == "succeeded", team.live.worker_log()
    alice.predict("alice-xss-suite", "\n".join(f"{p} => {p}" for p in ONE_LINE), api_name="/save_suite")
    alice.predict("alice-xss-suite", ["alice-parrot", "base"], BASE, 24, api_name="/run_suite")
    replies = alice.predict("question 1", ["alice-parrot"], BASE, 24, api_name="/compare")
    assert "onerror" in replies[0]["reply"], replies  # the adapter does answer with markup
    # Judged by her parrot too: every reason it gives is its markup (issue 30's hostile judge reply).
    evaluation = {"name": "alice-xss-eval", "adapters": ["alice-parrot"], "source": "dataset", "dataset": "alice-xss",
                  "max_rows": len(PAYLOADS), "max_new_tokens": 24, "judge": "alice-parrot", "judge_max_tokens": 24}
    eval_id = alice.predict(json.dumps(evaluation), 0, api_name="/submit_eval")
    assert team.wait("alice", eval_id)["status"] == "succeeded", team.live.worker_log()
    _a_judge_replies_with_markup(team.live.studio, eval_id)
    return {"job": job_id, "eval": eval_id}


def _a_judge_replies_with_markup(studio, eval_id: int) -> None:
    """The parrot, asked the judging prompt (far from its 16 training rows), garbles its markup (one CI run's reason:
    "=r=alererer...'l>"), so its first reason is set to the markup a hostile judge writes, as the job would have
    stored it: what this test checks is the page, not the judge."""
    from jobs.evaluate.results import results_dir
    from jobs.evaluate.run import RESULTS_FILE

    path = results_dir(studio, eval_id) / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8"))
    judged = [row for row in results["per_row"] if row.get("judgments")]
    assert judged, "the judge gave no judgment"
    judged[0]["judgments"][0]["reason"] = MODEL_PAYLOAD
    path.write_text(json.dumps(results), encoding="utf-8")


@pytest.fixture(scope="module")
def admin_page(team):
    if not CHROMIUM_PATH.is_file():
        _missing(f"{CHROMIUM_PATH} is missing")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(team.url)
        page.fill("#username", "root")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.get_by_role("button", name="Submit job")).to_be_visible(timeout=60_000)
        yield page
        browser.close()


def _nothing_runs(page, where: str) -> None:
    page.wait_for_timeout(500)  # an onerror or onload fires as soon as the element is in the page
    assert page.dialogs == [], f"{where}: a dialog opened: {page.dialogs}"
    assert page.evaluate(PAGE_CHECK) == [], where


def _until_still(locator, quiet_s: float = 2.0, timeout_s: float = 120.0) -> None:
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = locator.inner_text()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"still changing after {timeout_s} s: {last!r}")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")


def _pick(page, box, option: str) -> None:
    box.click()
    box.fill(option)
    page.get_by_role("option", name=option, exact=True).click()


def test_what_alice_planted_shows_as_text_for_the_admin(team, planted, admin_page):
    page = admin_page
    _nothing_runs(page, "the page itself")

    # Train tab: the preview of her rows, and an error that quotes markup typed into a field.
    dataset = page.get_by_role("combobox", name=re.compile(r"^Dataset"))
    _pick(page, dataset, "alice-xss")
    page.locator("#show-preview").click()
    preview = page.locator("#dataset-preview")
    expect(preview).to_contain_text("<img src=x onerror=alert('img')>", timeout=60_000)
    expect(preview).to_contain_text("""<a href="javascript:alert('svg-link')">""")
    _nothing_runs(page, "Train preview")
    dataset.fill(MODEL_PAYLOAD)
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#submit-summary")).to_contain_text(f"no dataset named '{MODEL_PAYLOAD}'")
    _nothing_runs(page, "a refused submit")

    # Datasets tab: her rows as the model sees them.
    _tab(page, "Datasets")
    _pick(page, page.locator("#dataset-picked input"), "alice-xss")
    page.locator("#dataset-inspect").click()
    expect(page.locator("#dataset-seen")).to_contain_text("<svg onload=alert('svg')>", timeout=60_000)
    _nothing_runs(page, "Datasets view")

    # Runs tab: her run, its sample answers (the model's markup).
    _tab(page, "Runs")
    page.locator("#selected-job input, #selected-job textarea").first.fill(str(planted["job"]))
    page.locator("#selected-job input, #selected-job textarea").first.press("Enter")
    expect(page.locator("#job-summary")).to_contain_text("alice-parrot", timeout=30_000)
    page.get_by_role("button", name=re.compile(r"^Timeline and sample answers")).click()
    expect(page.locator("#run-samples")).to_contain_text("onerror=alert('model')", timeout=30_000)
    _nothing_runs(page, "Runs tab")

    # Chat tab: her adapter answers the admin's markup with its own; both show as text.
    _tab(page, "Chat")
    picker = page.get_by_role("combobox", name=re.compile(r"^Compare"))
    picker.click()
    page.get_by_role("option", name="alice-parrot", exact=True).click()
    page.keyboard.press("Escape")
    page.locator("#chat-prompt textarea").fill("question 2")  # a prompt it was trained on: it answers with markup
    page.keyboard.press("Enter")
    pane = page.locator("#pane-1")
    expect(pane.get_by_test_id("bot")).to_contain_text("onerror=alert('model')", timeout=120_000)
    _nothing_runs(page, "chat panes, the model's markup")
    _until_still(page.locator("#chat-speed"), quiet_s=4)  # the round has ended: a click now would be ignored
    page.locator("#chat-clear").click()  # a fresh conversation
    page.locator("#chat-prompt textarea").fill(PAYLOADS[2])  # and the admin's own markup
    page.keyboard.press("Enter")
    expect(pane.get_by_test_id("user")).to_contain_text("<svg onload=alert('svg')>", timeout=120_000)
    _nothing_runs(page, "chat panes, a person's markup")

    # Her prompt suite: its prompts and the panes' answers in the grid.
    page.get_by_role("button", name=re.compile(r"^Prompt suites")).click()
    _pick(page, page.locator("#suite-name input"), "alice-xss-suite")
    expect(page.locator("#suite-grid")).to_contain_text("<script>alert('script')</script>", timeout=30_000)
    _nothing_runs(page, "suite grid")

    # Her evaluation: her rows' prompts and references, and her adapter's markup answers, in the per-row view.
    _tab(page, "Evaluate")
    _pick(page, page.locator("#eval-picked input"), f"{planted['eval']}: alice-xss-eval (succeeded)")
    rows = page.locator("#eval-rows")
    expect(rows).to_contain_text("<svg onload=alert('svg')>", timeout=30_000)
    expect(rows).to_contain_text("""<iframe srcdoc="<script>alert('srcdoc')</script>"></iframe>""")
    expect(page.locator("#eval-table")).to_contain_text("alice-parrot")
    expect(page.locator("#eval-judgments")).to_contain_text("onerror=alert('model')")  # the judge's reasons
    _nothing_runs(page, "evaluation results")

    # Account (issue 30): an API key is shown once, works with the openai client, and stops working once revoked;
    # a W&B key is stored and forgotten. The summary names each by its last characters only.
    from openai import AuthenticationError, OpenAI

    _tab(page, "Account")
    summary = page.locator("#account-summary")
    page.get_by_role("button", name=re.compile(r"^Your API key")).click()
    page.locator("#create-api-key").click()
    expect(page.locator("#account-status")).to_contain_text("API key created", timeout=30_000)
    key = page.locator("#new-api-key textarea, #new-api-key input").first.input_value()
    assert len(key) >= 20, key
    expect(summary).to_contain_text(f"An API key ending …{key[-4:]} is active.")
    expect(summary).not_to_contain_text(key)
    client = OpenAI(base_url=team.url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=60)
    assert "alice-parrot" in {model.id for model in client.models.list()}  # the admin sees every adapter
    page.locator("#revoke-api-key").click()
    expect(page.locator("#account-status")).to_contain_text("API key revoked.", timeout=30_000)
    expect(page.locator("#new-api-key")).to_be_hidden()
    expect(summary).to_contain_text("No API key.")
    with pytest.raises(AuthenticationError):
        client.models.list()
    page.get_by_role("button", name=re.compile(r"^Your Weights & Biases key")).click()
    page.get_by_label("W&B API key").fill("wandb-key-0123456789abcdef-</b>")
    page.get_by_role("button", name="Save W&B key").click()
    expect(page.locator("#account-status")).to_contain_text("W&B key saved.", timeout=30_000)
    expect(summary).to_contain_text("A W&B key ending …</b> is stored.")  # its markup as text
    expect(page.get_by_label("W&B API key")).to_have_value("")  # never shown back
    page.get_by_role("button", name="Forget W&B key").click()
    expect(page.locator("#account-status")).to_contain_text("W&B key forgotten.", timeout=30_000)
    expect(summary).to_contain_text("No W&B key.")
    _nothing_runs(page, "Account")
