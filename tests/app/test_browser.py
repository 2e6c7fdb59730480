"""A newcomer's first session, in a real Chromium against a real `python -m app` (with its embedded worker).

Train: a CSV of their own is imported and still listed after a reload; an invalid form is refused, each wrong
field outlined with its message and every problem summarised at the top, and nothing is queued; two small jobs
are queued. Runs: both succeed; the summary shows the spec and how long the job took, the loss curves render, the
log box shows its last line, and a browser refresh shows the same (state lives in the database). Adapters: both
are listed with their rank; one downloads in one click as a zip that holds a loadable adapter. Chat: a
two-line prompt (Shift+Enter) goes to the two adapters and the base, answered side by side. Then the two adapters
are combined into a third through the Adapters tab's Combine panel (a queued job), and one is deleted. A
screenshot of each step lands in the pytest tmp dir, and in STUDIO_SCREENSHOTS_DIR when set (the README's
pictures come from there).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    """In CI (.ci/run sets CI=true) a missing browser fails the run; on a laptop the test is skipped, saying why."""
    if IN_CI:
        pytest.fail(f"the browser test cannot run in CI: {reason}", pytrace=False)
    print(f"\nskipping the browser test: {reason}")
    pytest.skip(reason, allow_module_level=True)


if not CHROMIUM.is_file():
    _missing(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
try:
    from playwright import sync_api
except ImportError:
    _missing("Python playwright is not installed: `python -m pip install -r requirements.txt`")
expect = sync_api.expect
# An assertion's default wait (5 s) is too short on a busy host; one that holds returns at once.
expect.set_options(timeout=20_000)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
TRAINING_TIMEOUT_S = 360  # both jobs, one after the other on the embedded worker (about 45 s each here)
FAST = {"max_steps": 6, "logging_steps": 1, "eval_steps": 3, "save_steps": 3}
PROMPT = "What is 2 plus 3?"
PROMPT_LINE_2 = "Answer in one word."
# Sampled, not greedy: greedy decoding from a 6-step adapter on the random demo base can repeat its likeliest token,
# a space, 64 times, which renders as an empty bubble. Sampling from its near-flat distribution (seeded) cannot.
TEMPERATURE = "1"


@dataclass
class AppServer:
    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("studio")
    data_dir, log_path = root / "data", root / "app.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("STUDIO_DATABASE_URL", "STUDIO_QUEUE_URL", "STUDIO_AUTH", "STUDIO_HOST", "STUDIO_PORT")}
    env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_HEARTBEAT_S="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(root / "gradio-tmp"), PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        # Its own session: the app and its worker form one process group that teardown can always clean up.
        process = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = AppServer(f"http://127.0.0.1:{port}/", data_dir, log_path, process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(running.url):
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode} before answering:\n{running.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {running.url} within {STARTUP_TIMEOUT_S} s:\n"
                            f"{running.log_tail()}")
            time.sleep(1)
        yield running
    finally:
        leftovers = _stop(process)
    assert process.returncode == 0, f"the app exited with {process.returncode} on SIGTERM:\n{running.log_tail()}"
    assert not leftovers, f"SIGTERM to the app left its worker running:\n{running.log_tail()}"


def _stop(process: subprocess.Popen) -> bool:
    """SIGTERM, wait, then kill the whole group. True when something outlived the app (a leaked worker)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    leftovers = False
    deadline = time.monotonic() + 10  # the worker exits just after the app has waited for it
    while _group_alive(process.pid):
        if time.monotonic() > deadline:
            leftovers = True
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    return leftovers


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where a test's screenshots go (and the failure's)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@contextmanager
def _report_on_failure(app: AppServer, page, shots: Path):
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
        except Exception:  # the report must not hide the real failure
            pass
        print(f"\n--- app output (tail) ---\n{app.log_tail()}\n--- screenshots in {shots} ---")
        raise


def _api(app: AppServer):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def _open_studio(page, address: str) -> None:
    """Load the studio at `address` and wait until it is built (its Submit button shows)."""
    page.goto(address)
    expect(page.get_by_role("button", name="Submit job")).to_be_visible(timeout=60_000)


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")


def _shot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    extra = os.environ.get("STUDIO_SCREENSHOTS_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(extra) / f"{name}.png"), full_page=False)


def _field(page, name: str):
    """A Train form control, found by the human label the spec gives the field."""
    from app.train.spec_form import AUTO_NUMBERS
    from jobs.spec import field_label

    label = field_label(name)
    if name in ("name", *AUTO_NUMBERS):  # a textbox's accessible name runs on into its help text
        return page.get_by_role("textbox", name=re.compile(rf"^{re.escape(label)}\b"))
    return page.get_by_label(label, exact=True)


def _fill_job(page, name: str, **fields) -> None:
    _field(page, "name").fill(name)
    for field, value in fields.items():
        _field(page, field).fill(str(value))


def _choose_field(page, field: str, option: str) -> None:
    """Pick `option` in the Train form's dropdown for `field` (its own list, as `_choose` below does)."""
    box = _field(page, field)
    box.click()
    page.locator(f"li[role=option][id^='{box.get_attribute('aria-controls')}-option-'][aria-label='{option}']").click()
    expect(box).to_have_value(option)


def _submit(page) -> str:
    """Click Submit and return the status once it has changed (each submit in this journey changes it)."""
    status = page.locator("#submit-status .safe-markdown")  # not the progress timer
    before = status.inner_text()
    page.get_by_role("button", name="Submit job").click()
    expect(status).not_to_have_text(before, timeout=30_000)
    expect(status).to_contain_text(re.compile(r"Queued job|Not queued"))
    return status.inner_text()


def _job_row(page, name: str):
    return page.locator("#jobs-table").get_by_role("row", name=re.compile(rf"\b{re.escape(name)}\b"))


def _wait_until_succeeded(page, app: AppServer, names: list[str]) -> None:
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    pending = list(names)
    while pending:
        for name in list(pending):
            row = _job_row(page, name)
            status = row.get_by_role("gridcell").nth(2).inner_text() if row.count() == 1 else ""
            if status == "succeeded":
                pending.remove(name)
            elif status in ("failed", "cancelled"):
                jobs = {job["name"]: job for job in _api(app).predict(api_name="/list_jobs")}
                pytest.fail(f"job '{name}' {status}: {jobs.get(name, {}).get('error')}")
        if pending and time.monotonic() > deadline:
            pytest.fail(f"still not succeeded after {TRAINING_TIMEOUT_S} s: {pending}")
        if pending:
            page.wait_for_timeout(2000)


CSV_ROWS = "instruction,output\nSay hello.,Hello!\nSay goodbye.,Goodbye!\nCount to three.,\"1, 2, 3\"\n"


@pytest.mark.timeout(1800)  # the suite's longest walk: 3.5 minutes idle, 8 on a busy host
def test_newcomer_trains_inspects_downloads_and_compares(app_server, page, shots, tmp_path):
    app = app_server
    print(f"\nscreenshots: {shots}")
    with _report_on_failure(app, page, shots):
        started = time.monotonic()
        _open_studio(page, app.url)
        # The plan beside the form: the defaults are chosen for the example data (600 rows: a tenth held out), and
        # said so.
        expect(page.locator("#step-plan")).to_contain_text(re.compile(
            r"This job will make \d+ optimizer steps over [\d,]+ tokens.*60 rows held out for eval every 25 steps.*"
            r"Chosen for this job: eval_fraction 0.1, packing on, batch_size \d+, num_epochs \d+, "
            r"learning_rate 0.005"), timeout=30_000)

        # --- Train: their own CSV is imported, and still listed after a reload ----------------------------------
        own = tmp_path / "my-notes.csv"
        own.write_text(CSV_ROWS)
        page.get_by_role("button", name=re.compile(r"^Upload a dataset")).click()
        page.locator("#train-upload input[type=file]").set_input_files(str(own))
        page.get_by_role("button", name="Import dataset").click()
        expect(page.locator("#import-status")).to_contain_text("Imported 'my-notes' (3 rows", timeout=30_000)
        page.reload()
        dataset = _field(page, "dataset")
        dataset.click()
        expect(page.get_by_role("option", name="my-notes", exact=True)).to_be_visible(timeout=20_000)
        # Their 3 rows, trained on for several epochs with none held out, could be memorised: the plan says so and
        # holds a tenth out in one click (issue 33's small-data default).
        page.get_by_role("option", name="my-notes", exact=True).click()
        step_plan = page.locator("#step-plan")
        expect(step_plan).to_contain_text("Could memorise. Small data: each of the 3 rows", timeout=30_000)
        page.locator("#plan-hold-out").click()
        expect(_field(page, "eval_fraction")).to_have_value("0.1")
        expect(step_plan).to_contain_text("1 row held out for eval", timeout=30_000)
        expect(page.locator("#plan-hold-out")).to_be_hidden()
        _choose_field(page, "dataset", "example")
        _choose_field(page, "eval_fraction", "auto")  # as it was: each job below picks 0.1, which refreshes the plan

        # --- Train: an invalid form outlines each wrong field, sums up at the top, and queues nothing ----------
        _fill_job(page, "broken", lora_r=0)
        page.get_by_role("button", name=re.compile(r"^Advanced settings")).click()  # target modules, eval steps...
        targets = _field(page, "target_modules")
        targets.fill("nonexistent_proj")
        targets.press("Enter")  # a typed name becomes a chip beside the preset 'all-linear'
        page.keyboard.press("Escape")
        text = _submit(page)
        assert "Not queued" in text, text
        summary = page.locator("#submit-summary")
        expect(summary).to_contain_text(re.compile(r"LoRA rank \(r\).*lora_r.*1 to 1024"))
        expect(summary).to_contain_text(re.compile(r"Target modules.*nonexistent_proj"))
        flagged = page.locator(".spec-field.field-error")
        expect(flagged).to_have_count(2)
        expect(flagged.nth(0)).to_contain_text(re.compile(r"LoRA rank \(r\).*must be a whole number from 1 to 1024"))
        expect(flagged.nth(1)).to_contain_text(re.compile(r"Target modules.*unknown module\(s\) nonexistent_proj"))
        _shot(page, shots, "1-train-invalid")
        assert _api(app).predict(api_name="/list_jobs") == []

        # --- Train: a small job; the outlines go once the form is right ------------------------------------------
        page.get_by_title("Remove nonexistent_proj").click()
        _fill_job(page, "first", lora_r=8, **FAST)
        _choose_field(page, "eval_fraction", "0.1")  # a held-out tenth: the eval curve below
        expect(page.locator("#step-plan")).to_contain_text(re.compile(
            r"This job will make 6 optimizer steps.*60 rows held out for eval every 3 steps, 540 train"))
        text = _submit(page)
        match = re.search(r"Queued job (\d+)", text)
        assert match, text
        first_id = int(match.group(1))
        expect(flagged).to_have_count(0)
        _shot(page, shots, "2-train")
        listed = {job["name"]: job for job in _api(app).predict(api_name="/list_jobs")}
        assert set(listed) == {"first"}
        assert listed["first"]["spec"]["max_steps"] == 6 and listed["first"]["spec"]["lora_r"] == 8
        assert listed["first"]["spec"]["eval_fraction"] == 0.1

        # --- Runs: opened while the job is queued or running, followed live until it succeeds -----------------
        _open_tab(page, "Runs")
        expect(_job_row(page, "first")).to_be_visible(timeout=20_000)
        _wait_until_succeeded(page, app, ["first"])
        page.locator("#jobs-table").get_by_role("gridcell", name="first", exact=True).click()
        expect(page.locator("#selected-job textarea, #selected-job input").first).to_have_value(
            str(first_id), timeout=20_000)
        summary = page.locator("#job-summary")
        expect(summary).to_contain_text(f"Job {first_id}: first", timeout=20_000)
        expect(summary).to_contain_text(re.compile(r"Status: succeeded · took \d+"))
        expect(summary).to_contain_text("Adapter: first")
        expect(summary).to_contain_text("Max steps (max_steps): 6 (default -1)")
        expect(summary).to_contain_text(re.compile(r"Plan at submit: 6 optimizer steps over [\d,]+ tokens"))
        expect(summary).to_contain_text(re.compile(r"Learning rate \(learning_rate\): 0.005 \(chosen for this job"))
        expect(summary).to_contain_text(re.compile(
            r"Where the time went: queue [\d.]+ s · child start [\d.]+ s .*training [\d.]+ s .*all but training"))
        _expect_curves(page)
        _expect_log_shows_its_end(page, "adapter 'first' registered")
        _shot(page, shots, "3-runs")

        # A browser refresh shows the same truth: it comes from the database, not from the page.
        page.reload()
        _open_tab(page, "Runs")
        expect(_job_row(page, "first")).to_contain_text("succeeded", timeout=20_000)
        expect(summary).to_contain_text("Status: succeeded", timeout=20_000)  # the empty box follows the newest

        # --- Clone a run into the form, sweep two ranks from it, compare the sweep --------------------------------
        page.locator("#jobs-table").get_by_role("gridcell", name="first", exact=True).click()
        page.get_by_role("button", name="Clone into the Train form").click()
        expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
        expect(_field(page, "max_steps")).to_have_value("6")
        expect(_field(page, "name")).to_have_value("")
        page.get_by_role("button", name=re.compile(r"^Sweep: one job per point")).click()
        editor = page.locator("#sweep-axes .cm-content")
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text("lora_r: [4, 8]")
        page.get_by_label("Sweep name", exact=True).fill("ranks")
        page.get_by_role("button", name="Submit sweep").click()
        expect(page.locator("#submit-status")).to_contain_text("Queued sweep ranks: jobs", timeout=30_000)
        sweep_jobs = [j for j in _api(app).predict(api_name="/list_jobs") if j["group_name"] == "ranks"]
        assert sorted(j["spec"]["lora_r"] for j in sweep_jobs) == [4, 8]
        # The rank-8 point chats beside 'first' and combines with it (a linear combination needs one rank); the
        # rank-4 point is the one deleted at the end.
        twin = next(j["name"] for j in sweep_jobs if j["spec"]["lora_r"] == 8)
        other = next(j for j in sweep_jobs if j["spec"]["lora_r"] == 4)
        _open_tab(page, "Runs")
        _wait_until_succeeded(page, app, [j["name"] for j in sweep_jobs])
        page.get_by_role("button", name="Compare runs").click()
        page.wait_for_timeout(1500)  # opening the panel reloads its run and sweep choices
        page.locator("#compare-sweep input").click()
        page.get_by_role("option", name="ranks", exact=True).click()
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.locator("#compare-plot img")).to_be_visible(timeout=30_000)
        expect(page.locator("#compare-ranking").get_by_role("row")).to_have_count(3)  # header and the two runs
        specs = page.locator("#compare-specs")
        expect(specs).to_contain_text("LoRA rank (r) (lora_r)")
        expect(specs).not_to_contain_text("Max steps")  # differences only
        _shot(page, shots, "3b-compare")

        # --- Adapters: all three listed with their base and modules; one downloads in one click -------------------
        _open_tab(page, "Adapters")
        adapters = page.locator("#adapters-table")
        # Opening the tab refreshes the table the page loaded with (first) to add the sweep's adapters; a click
        # before that refresh lands would pick whatever row takes the clicked row's place.
        expect(adapters.get_by_role("gridcell", name="ranks-2", exact=True)).to_be_visible(timeout=30_000)
        for name in ("first", "ranks-1", "ranks-2"):
            row = adapters.get_by_role("row", name=re.compile(rf"^{name}\b"))
            expect(row).to_contain_text("demo-tiny-llama")
            expect(row).to_contain_text("all-linear")
        adapters.get_by_role("gridcell", name="first", exact=True).click()
        download_button = page.locator("#adapter-download")
        expect(download_button).to_contain_text("Download first.zip", timeout=30_000)
        with page.expect_download(timeout=30_000) as download_info:
            download_button.click()
        download = download_info.value
        assert download.suggested_filename == "first.zip"
        archive = tmp_path / "first.zip"
        download.save_as(archive)
        with zipfile.ZipFile(archive) as zipped:
            names = set(zipped.namelist())
            spec = json.loads(zipped.read("first/training_spec.json"))
            config = json.loads(zipped.read("first/adapter_config.json"))
        expected = {f"first/{f}" for f in ("adapter_config.json", "adapter_model.safetensors", "README.md",
                                            "training_spec.json", "final_metrics.json", "tokenizer.json",
                                            "tokenizer_config.json")}
        assert expected <= names, sorted(names)
        assert spec["name"] == "first" and spec["max_steps"] == 6
        assert config["r"] == 8 and config["peft_type"] == "LORA"
        assert config["base_model_name_or_path"] == "demo-tiny-llama"  # not a path on the server
        _shot(page, shots, "4-adapters")

        # --- Chat: a two-line prompt to the two adapters and the base, side by side ----------------------------
        _open_tab(page, "Chat")
        expect(page.locator("#chat-demo-note")).to_contain_text("noise by design")
        # No "Refresh adapters" click: opening the tab must offer the adapters that finished since the page loaded.
        picker = page.get_by_role("combobox", name=re.compile(r"^Compare"))
        for name in ("first", twin):
            picker.click()
            page.get_by_role("option", name=name, exact=True).click()
        page.keyboard.press("Escape")
        panes = {}
        for index, name in enumerate(("base", "first", twin)):  # the picker's order: base was there first
            pane = page.locator(f"#pane-{index}")
            expect(pane).to_be_visible(timeout=20_000)
            expect(pane.get_by_test_id("block-label")).to_have_text(name, timeout=20_000)
            panes[name] = pane
        expect(page.locator("#pane-3")).to_be_hidden()
        page.get_by_role("button", name=re.compile(r"^Generation settings")).click()
        _set_number(page, "Temperature", TEMPERATURE)
        prompt = page.locator("#chat-prompt textarea")
        prompt.click()
        prompt.type(PROMPT)
        page.keyboard.press("Shift+Enter")  # a new line, not a send
        prompt.type(PROMPT_LINE_2)
        expect(prompt).to_have_value(f"{PROMPT}\n{PROMPT_LINE_2}")
        page.keyboard.press("Enter")  # sends
        for name, pane in panes.items():
            expect(pane.get_by_test_id("user"), name).to_contain_text(PROMPT_LINE_2, timeout=30_000)
            expect(pane.get_by_test_id("bot"), name).to_have_text(re.compile(r"\S"), timeout=180_000)
        expect(prompt).to_have_value("")
        _wait_until_stable(page, panes)
        _shot(page, shots, "5-chat")
        print(f"replies: { {n: p.get_by_test_id('bot').inner_text()[:60] for n, p in panes.items()} }")

        # --- Adapters: the two combine into a third through the Combine panel (a queued job) ------------------------
        _open_tab(page, "Adapters")
        page.get_by_role("button", name=re.compile(r"^Combine adapters")).click()
        page.locator("#combine-name input, #combine-name textarea").first.fill("both")
        parents = page.locator("#combine-adapters input")
        for name in ("first", twin):
            parents.click()  # this dropdown's own option: the Chat tab's picker lists the same names
            page.locator(f"li[role=option][id^='{parents.get_attribute('aria-controls')}-option-']"
                         f"[aria-label='{name}']").click()
        page.keyboard.press("Escape")
        page.locator("#adapter-combine").click()
        expect(page.locator("#adapter-status")).to_contain_text("Queued combine job", timeout=30_000)
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while "both" not in {a["name"] for a in _api(app).predict("", api_name="/list_adapters")}:
            if time.monotonic() > deadline:
                jobs = {job["name"]: job for job in _api(app).predict(api_name="/list_jobs")}
                pytest.fail(f"the combined adapter never appeared: {jobs.get('both')}")
            page.wait_for_timeout(2000)
        _open_tab(page, "Runs")
        _open_tab(page, "Adapters")  # opening the tab refreshes its table
        expect(adapters.get_by_role("row", name=re.compile(r"^both\b"))).to_contain_text("demo-tiny-llama",
                                                                                          timeout=30_000)

        # --- Adapters: one is deleted, files and entry together --------------------------------------------------
        adapters.get_by_role("gridcell", name=other["name"], exact=True).click()
        expect(page.locator("#adapter-name textarea, #adapter-name input").first).to_have_value(other["name"],
                                                                                             timeout=30_000)
        page.get_by_role("button", name="Delete adapter").click()
        expect(page.locator("#adapter-status")).to_contain_text(f"Deleted {other['name']}", timeout=30_000)
        expect(adapters.get_by_role("row", name=re.compile(rf"^{other['name']}\b"))).to_have_count(0)
        assert {a["name"] for a in _api(app).predict("", api_name="/list_adapters")} == {"first", twin, "both"}
        assert not (app.data_dir / "adapters" / f"job-{other['id']}").exists()
        print(f"journey took {time.monotonic() - started:.0f} s")


ERROR_TOAST = "[data-testid=toast-body].error"


def test_a_link_to_a_run_opens_it_and_no_visit_starts_with_an_error(app_server, page, shots):
    """The address keeps the selected run (?job=N): opening such a link lands on the Runs tab with that run picked.
    Every page load runs the Runs tab's address handler under the accounts guard; it once lost its request there,
    and every visitor met an error toast."""
    app = app_server
    with _report_on_failure(app, page, shots):
        _open_studio(page, app.url)
        expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
        unknown = 987654
        page.goto(f"{app.url}?job={unknown}")
        expect(page.get_by_role("tab", name="Runs", exact=True)).to_have_attribute("aria-selected", "true",
                                                                                  timeout=30_000)
        expect(page.locator("#selected-job textarea, #selected-job input").first).to_have_value(str(unknown))
        expect(page.locator("#job-summary")).to_contain_text(f"No job with id {unknown}.", timeout=20_000)
        assert "?job=" in page.url
        _open_studio(page, f"{app.url}?job=not-a-number")  # a mangled link opens the studio as a plain visit would
        page.wait_for_timeout(3000)  # the load handlers have run: an error would have shown by now
        expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
        expect(page.locator(ERROR_TOAST)).to_have_count(0)
        _shot(page, shots, "deep-link")


# The base options' labels wider than the room the base box leaves its text (its left edge to the dropdown's arrow),
# each measured in the box's own font: a label cut under the arrow read "demo-tiny-llama · 1M · fits he▾".
BASE_LABELS_CUT = """() => {
  const input = document.querySelector('#field-base_model input');
  const room = document.querySelector('#field-base_model .icon-wrap').getBoundingClientRect().left
               - input.getBoundingClientRect().left;
  const font = document.createElement('canvas').getContext('2d');
  font.font = getComputedStyle(input).font;
  const options = document.querySelectorAll(`li[role=option][id^='${input.getAttribute('aria-controls')}-option-']`);
  return [...options].map(o => o.getAttribute('aria-label'))
    .filter(label => font.measureText(label).width > room).map(label => `${label} (room ${Math.round(room)} px)`);
}"""
BLANK_ABOVE_THE_FORM = """() => document.querySelector('#field-base_model').getBoundingClientRect().top
  - document.querySelector('[role=tablist]').getBoundingClientRect().bottom"""


def test_the_train_tab_reads_in_one_glance_and_by_keyboard(app_server, page, shots):
    """Issue 33's Train tab at 1400 x 900 with base and data chosen: Start on screen without scrolling; what every job
    needs, then the common knobs, the rest folded under Advanced; one help line per field, no "Spec field: x", the
    whole help in an (i) a keyboard reaches; empty "auto" fields read as the value the plan chose; the base picker
    shows each base's size and fit; the keyboard reaches Start through the form (labels tied to their inputs)."""
    app = app_server
    with _report_on_failure(app, page, shots):
        page.set_viewport_size({"width": 1400, "height": 900})
        _open_studio(page, app.url)
        base = _field(page, "base_model")
        base.click()
        fitting = page.get_by_role("option", name=re.compile(r"^demo-tiny-llama · \d+M · fits here$"))
        expect(fitting).to_be_visible()
        assert page.evaluate(BASE_LABELS_CUT) == []  # each base's label fits its box, clear of the arrow
        fitting.click()
        expect(_field(page, "dataset")).to_have_value("example")
        learning_rate = page.locator("#field-learning_rate")
        expect(learning_rate).to_contain_text("auto: 5e-3 for demo-tiny-llama", timeout=30_000)
        expect(page.locator("#field-eval_fraction")).to_contain_text("auto: 0.1 (60 of 600 rows held out)")
        for name in ("num_epochs", "learning_rate", "batch_size"):  # empty reads as the word, never as a 0
            expect(_field(page, name)).to_have_value("")
            expect(_field(page, name)).to_have_attribute("placeholder", "auto")
        start = page.get_by_role("button", name="Submit job")
        page.evaluate("window.scrollTo(0, 0)")  # as the page opens: picking from the base list may have scrolled it
        box = start.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900 and box["x"] + box["width"] <= 1400, box
        assert page.evaluate("window.scrollY") == 0
        blank = page.evaluate(BLANK_ABOVE_THE_FORM)
        assert blank <= 40, f"{blank:.0f} px of blank between the tabs and the form"  # empty panels took ~90
        expect(page.locator(".spec-field .info-text", has_text="Spec field")).to_have_count(0)
        expect(_field(page, "optimizer")).to_be_hidden()  # folded under Advanced until asked for
        _shot(page, shots, "train-layers")

        # The (i) beside a field: its whole help, reached by keyboard.
        tip = learning_rate.locator(".field-tip")
        _field(page, "learning_rate").focus()
        page.keyboard.press("Tab")
        expect(tip).to_be_focused()
        expect(tip).to_have_attribute("aria-label", re.compile(r"Peak learning rate.*Spec field: learning_rate\."))
        # Tab from the adapter name on: the keyboard reaches Start without the mouse.
        _field(page, "name").focus()
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.id") == "submit-job":
                break
        else:
            pytest.fail("Tab never reached the Submit button")
        _field(page, "lora_r").fill("0")  # a refusal outlines its field only; with no plan, auto fields show help
        _submit(page)
        expect(page.locator("#field-lora_r.field-error")).to_contain_text("must be a whole number from 1 to 1024")
        expect(page.locator(".spec-field.field-error")).to_have_count(1)
        expect(learning_rate).to_contain_text("Peak learning rate")
        page.get_by_role("button", name=re.compile(r"^Advanced settings")).click()
        expect(_field(page, "optimizer")).to_be_visible()
        for group in ("LoRA", "Optimisation", "Data", "Method options", "Precision and speed",
                      "Checkpoints and tracking"):
            expect(page.get_by_role("button", name=re.compile(rf"^{group}"))).to_be_visible()

        # Only what the chosen method and fine-tuning read shows (each spec field says which runs read it); a hidden
        # field keeps its value; the plan follows the method.
        _field(page, "lora_r").fill("8")
        plan = page.locator("#step-plan")
        for name in ("dpo_beta", "grpo_rewards", "freeze_trainable_layers"):
            expect(_block(page, name)).to_be_hidden()
        _choose_field(page, "method", "dpo")
        expect(_block(page, "dpo_beta")).to_be_visible()
        for name in ("grpo_rewards", "num_generations", "orpo_lambda", "packing", "loss_turns"):
            expect(_block(page, name)).to_be_hidden()
        expect(plan).to_contain_text("method dpo trains on a preference dataset")  # the example data is chats
        _field(page, "dpo_beta").fill("0.25")
        seeded = _seed_adapters(app, {"a-scorer": "SEQ_CLS", "a-talker": "CAUSAL_LM"})
        try:  # the reward model picker offers the reward models of the base, not the adapters that generate
            _choose_field(page, "method", "grpo")
            for name in ("grpo_rewards", "num_generations", "grpo_reward_code", "grpo_reward_adapter"):
                expect(_block(page, name)).to_be_visible()
            picker = _field(page, "grpo_reward_adapter")
            picker.click()
            options = page.locator(f"li[role=option][id^='{picker.get_attribute('aria-controls')}-option-']")
            expect(options.filter(has_text="a-scorer")).to_have_count(1)
            expect(options.filter(has_text="a-talker")).to_have_count(0)
            page.keyboard.press("Escape")
        finally:
            for name in seeded:
                _api(app).predict(name, api_name="/delete_adapter")
        expect(_block(page, "dpo_beta")).to_be_hidden()
        expect(plan).to_contain_text("method grpo trains on a prompt/reference dataset")
        _choose_field(page, "method", "dpo")
        expect(_field(page, "dpo_beta")).to_have_value("0.25")
        _choose_field(page, "method", "sft")
        _choose_field(page, "finetuning", "freeze")
        for name in ("freeze_trainable_layers", "freeze_train_head", "learning_rate", "packing"):
            expect(_block(page, name)).to_be_visible()
        for name in ("lora_r", "lora_alpha", "target_modules", "quantization", "double_quant", "init_adapter",
                     "dpo_beta"):
            expect(_block(page, name)).to_be_hidden()
        expect(page.get_by_role("button", name=re.compile(r"^LoRA"))).to_be_hidden()  # the group, all its fields
        expect(plan).to_contain_text("Method sft: the base's last 2 decoder blocks train")
        _shot(page, shots, "train-freeze")

        # Clone-and-edit of a run of another method shows that method's fields.
        from jobs.spec import TrainSpec

        run_id = _seed_a_run(app, TrainSpec(name="a-grpo-run", method="grpo", grpo_beta=0.04))
        _open_tab(page, "Runs")
        page.locator("#selected-job textarea, #selected-job input").first.fill(str(run_id))
        page.get_by_role("button", name="Clone into the Train form").click()
        expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true",
                                                                                     timeout=30_000)
        expect(_field(page, "method")).to_have_value("grpo")
        expect(_block(page, "grpo_beta")).to_be_visible(timeout=30_000)  # one more round trip after the values
        expect(_field(page, "grpo_beta")).to_have_value("0.04")
        for name in ("lora_r", "lora_alpha"):
            expect(_block(page, name)).to_be_visible()
        for name in ("freeze_trainable_layers", "dpo_beta"):
            expect(_block(page, name)).to_be_hidden()


def _block(page, name: str):
    """A Train form field's whole block (label, help and control), found by its id."""
    return page.locator(f"#field-{name}")


def _seed_adapters(app: AppServer, kinds: dict[str, str]) -> list[str]:
    """Adapter entries of the demo base whose folders hold only a config of the peft task type given (enough for
    what the pickers read; nothing loads them). The caller deletes them: other tests of the app chat with adapters."""
    from storage.db import Database
    from storage.models import Adapter
    from storage.settings import load_settings

    settings = load_settings({"STUDIO_DATA_DIR": str(app.data_dir)})
    db = Database(settings.database_url)
    with db.write() as session:
        for name, task_type in kinds.items():
            folder = settings.data_dir / "adapters" / name
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text(json.dumps({"task_type": task_type}))
            session.add(Adapter(name=name, base_model="demo-tiny-llama", path=f"adapters/{name}", size_bytes=1))
    db.dispose()
    return list(kinds)


def _seed_a_run(app: AppServer, spec) -> int:
    """A cancelled run of `spec` in the app's database (nothing trains: clone-and-edit reads its spec alone)."""
    from storage import jobs_repo
    from storage.db import Database
    from storage.models import JobStatus, utcnow
    from storage.settings import load_settings

    db = Database(load_settings({"STUDIO_DATA_DIR": str(app.data_dir)}).database_url)
    with db.write() as session:
        job = jobs_repo.create_job(session, spec.name, spec.model_dump(mode="json"))
        job.status, job.finished_at = JobStatus.CANCELLED, utcnow()
        job_id = job.id
    db.dispose()
    return job_id


SHAREGPT_ROWS = [{"conversations": [{"from": "system", "value": "Answer briefly."},
                                    {"from": "human", "value": f"What is {i} plus {i}?"},
                                    {"from": "gpt", "value": f"{2 * i}."}]} for i in range(8)]
# Alpaca with the names a spreadsheet export gave it: no format matches until the person maps the columns.
ODD_CSV = "Frage,Kontext,Antwort\n" + "".join(
    f"Translate the number {i} into words.,{'in English' if i % 2 else ''},The number {i} in words is {i}."
    f"{' Indeed.' * (i * 3)}\n" for i in range(10))


def _choose(page, elem_id: str, option: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    # This dropdown's own option: another dropdown's list can still be in the page with one of the same name.
    options = box.get_attribute("aria-controls")
    page.locator(f"li[role=option][id^='{options}-option-'][aria-label='{option}']").click()
    expect(box).to_have_value(option)


def _upload(page, path: Path) -> None:
    page.locator("#dataset-upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#dataset-proposal")).to_contain_text(re.compile(r"\d+ rows; columns:"), timeout=30_000)


def test_datasets_are_mapped_inspected_and_trained_on(app_server, page, shots, tmp_path):
    """A ShareGPT file (format proposed) and an Alpaca CSV with renamed columns (mapped by hand) are imported in the
    Datasets tab; the CSV's rows are shown as the model sees them, loss tokens highlighted and the cut marked, with
    the length histogram; the view follows the assistant-only switch; then a job trains on the mapped CSV."""
    app = app_server
    with _report_on_failure(app, page, shots):
        _open_studio(page, app.url)
        _open_tab(page, "Datasets")
        page.get_by_role("button", name=re.compile(r"^Import a file")).click()
        status = page.locator("#dataset-import-status")

        chats = tmp_path / "chats.json"
        chats.write_text(json.dumps(SHAREGPT_ROWS))
        _upload(page, chats)
        expect(page.locator("#dataset-proposal")).to_contain_text("Proposed: sharegpt with conversations")
        expect(page.locator("#dataset-format input")).to_have_value("sharegpt")
        page.locator("#dataset-import").click()
        expect(status).to_contain_text("Imported 'chats' (8 rows, sharegpt)", timeout=30_000)

        odd = tmp_path / "numbers.csv"
        odd.write_text(ODD_CSV)
        _upload(page, odd)
        expect(page.locator("#dataset-proposal")).to_contain_text("No format matched these columns")
        _choose(page, "dataset-format", "alpaca")
        for role, column in (("instruction", "Frage"), ("input", "Kontext"), ("output", "Antwort")):
            expect(page.locator(f"#role-{role}")).to_be_visible()
            _choose(page, f"role-{role}", column)
        expect(page.locator("#role-conversations")).to_be_hidden()
        page.get_by_label("Dataset name", exact=True).fill("numbers")
        page.locator("#dataset-import").click()
        expect(status).to_contain_text("Imported 'numbers' (10 rows, alpaca)", timeout=30_000)
        table = page.locator("#datasets-table")
        for name, fmt in (("chats", "sharegpt"), ("numbers", "alpaca")):
            expect(table.get_by_role("row", name=re.compile(rf"^{name} {fmt}\b"))).to_be_visible()
        listed = {d["name"]: d for d in _api(app).predict(api_name="/list_datasets")}
        assert listed["numbers"]["mapping"] == {
            "format": "alpaca", "columns": {"instruction": "Frage", "input": "Kontext", "output": "Antwort"}}

        # --- What the model sees: loss highlighted, the cut marked, the histogram against max_length ------------
        page.get_by_role("button", name=re.compile(r"^Import a file")).click()  # folded away again
        table.get_by_role("gridcell", name="numbers", exact=True).click()
        expect(page.locator("#dataset-picked input")).to_have_value("numbers")
        page.get_by_label("max_length", exact=True).fill("48")
        page.get_by_label("Show rows from", exact=True).fill("8")
        page.locator("#dataset-inspect").click()
        stats = page.locator("#dataset-stats")
        expect(stats).to_contain_text(re.compile(r"10 rows, [\d,]+ tokens"), timeout=60_000)
        expect(stats).to_contain_text(re.compile(r"[1-9]\d* rows \(\d+\.\d%\) are longer than max_length 48"))
        seen = page.locator("#dataset-seen")
        expect(seen.locator("h4").first).to_contain_text("Row 8:")
        expect(seen.locator(".seen .loss").first).to_contain_text("The number 7 in words is 7.")
        expect(seen.locator(".mark")).not_to_have_count(0)  # the longer rows are cut, and the cut is shown
        for part in ("kept", "past max_length"):  # bars on both sides of the cut
            bars = page.locator(f"#dataset-histogram [aria-roledescription='bar'][aria-label*='cut: {part}']")
            expect(bars).not_to_have_count(0, timeout=20_000)
        assert "tokens (demo-tiny-llama)" in table.inner_text() and "inspect to count" not in table.inner_text()
        page.locator("#dataset-stats").scroll_into_view_if_needed()
        _shot(page, shots, "6-datasets")

        # Assistant-only loss off: every token kept carries loss, and the view follows without a click.
        page.get_by_label("Assistant-only loss", exact=True).uncheck()
        expect(stats).to_contain_text("100% of the tokens kept carry loss", timeout=30_000)
        expect(seen.locator(".seen").first.locator("span.loss")).to_have_count(1)

        # --- Train on the mapped CSV ----------------------------------------------------------------------------
        _open_tab(page, "Train")
        _field(page, "dataset").click()
        page.get_by_role("option", name="numbers", exact=True).click()
        page.get_by_role("button", name=re.compile(r"^Advanced settings")).click()  # eval/logging/save steps
        _fill_job(page, "on-numbers", **FAST)
        text = _submit(page)
        assert "Queued job" in text, text
        _open_tab(page, "Runs")
        _wait_until_succeeded(page, app, ["on-numbers"])
        job = next(j for j in _api(app).predict(api_name="/list_jobs") if j["name"] == "on-numbers")
        assert job["spec"]["dataset"] == "numbers"


def _an_adapter_of_the_demo_base(app: AppServer) -> str:
    """An adapter to put beside the base: one an earlier test of this module trained, else a short job's."""
    client = _api(app)
    adapters = [a for a in client.predict("demo-tiny-llama", api_name="/list_adapters") if a["name"] != "both"]
    if adapters:  # not the journey's combined adapter, which can answer with an empty bubble (_demo_adapters)
        return adapters[0]["name"]
    job_id = client.predict(json.dumps({**FAST, "name": "blind-one", "max_steps": 4}), 0, api_name="/submit_job")
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    while client.predict(job_id, api_name="/get_job")["status"] != "succeeded":
        assert time.monotonic() < deadline, "the adapter for the blind test did not train in time"
        time.sleep(2)
    return "blind-one"


def _blind_round(page, prompt_text: str, letter: str) -> str:
    """Send a prompt in blind mode, vote `letter` best, and return the reveal."""
    prompt = page.locator("#chat-prompt textarea")
    prompt.fill(prompt_text)
    page.keyboard.press("Enter")
    expect(page.locator(f"#vote-{letter}")).to_be_visible(timeout=180_000)
    for index, pane_label in enumerate(("A", "B")):  # names stay hidden until the vote
        expect(page.locator(f"#pane-{index}").get_by_test_id("block-label")).to_have_text(pane_label)
    page.locator(f"#vote-{letter}").click()
    status = page.locator("#blind-status")
    expect(status).to_contain_text(f"Vote recorded ({letter} best)", timeout=30_000)
    expect(page.locator("#vote-A")).to_be_hidden()  # one vote per round
    revealed = status.inner_text()
    for index, pane_label in enumerate(("A", "B")):  # and the panes show whose answer they held
        name = re.search(rf"{pane_label} was (\S+?)[,.]", revealed).group(1)
        expect(page.locator(f"#pane-{index}").get_by_test_id("block-label")).to_have_text(f"{pane_label}: {name}")
    return revealed


def test_blind_votes_rank_adapters_and_become_a_dpo_job(app_server, page, shots):
    """Two blind rounds between the base and an adapter: the names show only after each vote, the leaderboard
    follows the votes, and the votes become a preference dataset and a DPO job that trains."""
    app = app_server
    with _report_on_failure(app, page, shots):
        adapter = _an_adapter_of_the_demo_base(app)
        _open_studio(page, app.url)
        _open_tab(page, "Chat")
        picker = page.get_by_role("combobox", name=re.compile(r"^Compare"))
        picker.click()
        page.get_by_role("option", name=adapter, exact=True).click()
        page.keyboard.press("Escape")
        page.locator("#blind-mode input[type=checkbox]").check()
        expect(page.locator("#pane-1").get_by_test_id("block-label")).to_have_text("B")
        page.get_by_role("button", name=re.compile(r"^Generation settings")).click()
        _set_number(page, "Temperature", TEMPERATURE)

        # Stop ends a long generation early: no round to vote on, and the next prompt goes through.
        _set_number(page, "Max new tokens", "512")
        page.locator("#chat-prompt textarea").fill("Tell me a very long story.")
        page.keyboard.press("Enter")
        expect(page.locator("#pane-0").get_by_test_id("bot")).to_have_text(re.compile(r"\S"), timeout=60_000)
        page.locator("#chat-stop").click()
        page.wait_for_timeout(3000)
        expect(page.locator("#vote-A")).to_be_hidden()
        _set_number(page, "Max new tokens", "32")

        revealed = _blind_round(page, "Name a colour.", "A")
        winner = re.search(r"A was (\S+?)[,.]", revealed).group(1)
        assert winner in (adapter, "base") and f"B was {({adapter, 'base'} - {winner}).pop()}" in revealed
        page.get_by_role("button", name=re.compile(r"^Leaderboard and preference tuning")).click()
        board = page.locator("#leaderboard")
        expect(page.locator("#leaderboard-note")).to_contain_text("1 blind vote on demo-tiny-llama")
        expect(board.get_by_role("row").nth(1)).to_contain_text(winner)  # the winner ranks first
        first_board = board.inner_text()

        _blind_round(page, "Name an animal.", "B")
        expect(page.locator("#leaderboard-note")).to_contain_text("2 blind votes on demo-tiny-llama")
        expect(board).not_to_have_text(first_board)
        standings = _api(app).predict("demo-tiny-llama", api_name="/leaderboard")
        assert sorted(row["rounds"] for row in standings) == [2, 2]
        assert sum(row["wins"] for row in standings) == 2
        _shot(page, shots, "7-blind")

        # --- The votes become a preference dataset and a DPO job ---------------------------------------------
        page.get_by_label("Preference dataset name", exact=True).fill("my-votes")
        page.get_by_label("Steps", exact=True).fill("4")  # the Method picker stays on dpo
        page.locator("#dpo-submit").click()
        expect(page.locator("#dpo-status")).to_contain_text(re.compile(r"Queued DPO job \d+"), timeout=30_000)
        job_id = int(re.search(r"Queued DPO job (\d+)", page.locator("#dpo-status").inner_text()).group(1))
        datasets = {d["name"]: d for d in _api(app).predict(api_name="/list_datasets")}
        assert datasets["my-votes"]["format"] == "preference" and datasets["my-votes"]["rows"] >= 1
        deadline = time.monotonic() + TRAINING_TIMEOUT_S
        while (job := _api(app).predict(job_id, api_name="/get_job"))["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"the DPO job is still {job['status']}"
            time.sleep(2)
        assert job["status"] == "succeeded", job["error"]
        assert job["spec"]["method"] == "dpo" and job["spec"]["dataset"] == "my-votes"
        leading = next(row["adapter"] for row in standings if row["adapter"] != "base")
        assert job["spec"]["init_adapter"] == leading  # it starts from the adapter the votes put first


def _set_number(page, label: str, value: str) -> None:
    """Type into a slider's number box until the slider shows it (on a loaded machine the first keys can land
    before the box listens)."""
    box = page.get_by_role("spinbutton", name=f"number input for {label}")
    slider = page.get_by_role("slider", name=f"range slider for {label}")
    deadline = time.monotonic() + 30
    while slider.input_value() != value:
        assert time.monotonic() < deadline, f"the {label} slider does not take {value}"
        box.fill(value)
        box.press("Tab")
        page.wait_for_timeout(500)


def _expect_curves(page) -> None:
    """Both curves drawn in colour on numeric axes. The plot was first rendered empty (no jobs when the page loaded)
    and has followed the runs since: what it was built from must not hide what came later."""
    plot = page.locator("#loss-plot")
    for series in ("train loss", "eval loss"):
        line = plot.locator(f"[aria-roledescription='line mark'][aria-label*='series: {series}']")
        expect(line).to_have_count(1, timeout=20_000)
        expect(line).to_have_attribute("stroke", re.compile(r"^#[0-9a-f]{6}$", re.IGNORECASE))
        expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+L"))
    expect(plot.locator("[aria-roledescription='legend']")).to_have_attribute(
        "aria-label", re.compile("2 values: train loss, eval loss"))
    for axis in ("X", "Y"):
        expect(plot.locator(f"[aria-roledescription='axis'][aria-label^='{axis}-axis']")).to_have_attribute(
            "aria-label", re.compile("linear scale"))


def _expect_log_shows_its_end(page, last_line: str) -> None:
    box = page.locator("#log-tail textarea")
    expect(box).to_have_value(re.compile(re.escape(last_line) + r"\s*$"), timeout=20_000)
    deadline = time.monotonic() + 10
    while box.evaluate("b => b.scrollHeight - b.scrollTop - b.clientHeight") > 4:  # scrolled to its last line
        assert time.monotonic() < deadline, "the log box does not show its end"
        page.wait_for_timeout(200)
    assert box.evaluate("b => b.scrollHeight > b.clientHeight"), "the log should be longer than its box"


def _wait_until_stable(page, panes: dict, timeout_s: float = 120) -> None:
    """Streaming is over when no pane's reply changed for two seconds."""
    deadline, previous = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        current = [pane.get_by_test_id("bot").inner_text() for pane in panes.values()]
        if current == previous:
            return
        previous = current
        page.wait_for_timeout(2000)
    pytest.fail("the chat replies were still changing after two minutes")


LONG_ANSWER = "x" * 600  # one unbroken run of characters, as a model's answer can be
SAMPLE_STEPS = range(0, 64, 8)  # eight columns of answers beside the prompt
# Every header whose longest word is wider than the header itself: a header broken inside a word.
BROKEN_HEADERS = """() => [...document.querySelectorAll('th .header')].filter(h => h.offsetParent).flatMap(h => {
  const probe = document.createElement('span');
  probe.style.cssText = 'white-space: nowrap; position: absolute; visibility: hidden';
  h.appendChild(probe);
  const broken = h.innerText.split(/\\s+/).filter(word => {
    probe.textContent = word;
    return probe.getBoundingClientRect().width > h.getBoundingClientRect().width + 0.5; });
  probe.remove();
  return broken.map(word => `${h.innerText}: ${word}`); })"""
# How far right the page, a table and its furthest cell reach.
REACH = """selector => { const table = document.querySelector(selector);
  const cells = [...table.querySelectorAll('.body-cell, th')].map(c => c.getBoundingClientRect().right);
  return {page: document.scrollingElement.scrollWidth, viewport: innerWidth,
          table: table.getBoundingClientRect().right, cells: Math.max(...cells)}; }"""


def _seed_a_finished_run_and_a_suite(app: AppServer) -> None:
    """A finished run whose sample answers are long unbroken text at eight steps, and a suite whose grid holds one,
    written to the app's database as a training child and a suite run write them."""
    from datetime import timedelta

    from jobs.spec import DEMO_BASE_MODEL, TrainSpec
    from storage import jobs_repo, suites_repo
    from storage.access import LOCAL_OWNER
    from storage.db import Database
    from storage.models import JobStatus, PromptSuite, utcnow
    from storage.settings import load_settings

    db = Database(load_settings({"STUDIO_DATA_DIR": str(app.data_dir)}).database_url)
    with db.write() as session:
        job = jobs_repo.create_job(session, "long-answers", TrainSpec(name="long-answers").model_dump(mode="json"))
        job.status, job.step, job.total_steps = JobStatus.SUCCEEDED, SAMPLE_STEPS[-1], SAMPLE_STEPS[-1]
        job.started_at, job.finished_at = utcnow() - timedelta(minutes=2), utcnow()
        for step in SAMPLE_STEPS:
            jobs_repo.record_samples(session, job.id, step, [("Say something long.", LONG_ANSWER)])
        suite = PromptSuite(name="long-suite", prompts=[{"prompt": "Say something long.", "reference": None}],
                            owner=LOCAL_OWNER)
        session.add(suite)
        session.flush()
        suites_repo.put_result(session, suite.id, DEMO_BASE_MODEL, "base", 0, reply=LONG_ANSWER,
                               reference_loglik=None, settings={})
    db.dispose()


HOSTILE = "<img src=x onerror=alert(1)>"
"""A search name and a trial's parameter value someone typed: the page must show it as text."""


def _seed_a_finished_search(app: AppServer) -> None:
    """A finished search of three complete trials, named HOSTILE, whose best trial's system_prompt is HOSTILE too:
    written to the app's database and its Optuna storage as the search driver and the trials' children write them
    (a real search trains a job per trial; the panel under test only reads what they leave)."""
    from datetime import timedelta

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from jobs.search.request import SearchRequest
    from jobs.spec import TrainSpec
    from storage import jobs_repo
    from storage.access import LOCAL_OWNER
    from storage.db import Database
    from storage.models import JobStatus, utcnow
    from storage.search_store import search_storage
    from storage.settings import load_settings

    settings = load_settings({"STUDIO_DATA_DIR": str(app.data_dir)})
    space = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
             "system_prompt": {"choices": ["Be brief.", HOSTILE]}}
    url, engine_kwargs = search_storage(settings)
    study = optuna.create_study(study_name=HOSTILE, direction="minimize",
                                storage=optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))
    request = SearchRequest(name=HOSTILE, base={"dataset": "example"}, space=space, budget_trials=3)
    for key, value in {"request": request.as_dict(), "owner": LOCAL_OWNER, "started_at": time.time(),
                       "state": "done"}.items():
        study.set_user_attr(key, value)
    distributions = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
                     "system_prompt": CategoricalDistribution(["Be brief.", HOSTILE])}
    trials = [(3e-3, HOSTILE, [2.1, 1.6, 1.2]), (1e-4, "Be brief.", [2.2, 2.0, 1.9]),
              (8e-3, "Be brief.", [2.0, 1.7, 1.5])]
    db = Database(settings.database_url)
    with db.write() as session:
        for number, (rate, prompt, losses) in enumerate(trials, start=1):
            params = {"learning_rate": rate, "system_prompt": prompt}
            curve = {2 * index: loss for index, loss in enumerate(losses, start=1)}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=losses[-1],
                                                      intermediate_values=curve,
                                                      user_attrs={"origin": "plan"} if number == 1 else {}))
            name = f"{HOSTILE}-{number}"
            job = jobs_repo.create_job(session, name, TrainSpec(name=f"trial-{number}").model_dump(mode="json"))
            job.group_name, job.status, job.step, job.total_steps = HOSTILE, JobStatus.SUCCEEDED, 6, 6
            job.started_at, job.finished_at = utcnow() - timedelta(minutes=1), utcnow()
            for step, loss in curve.items():
                jobs_repo.record_metrics(session, job.id, step, {"eval_loss": loss})
    db.dispose()


def _expect_within_the_page(page, selector: str) -> None:
    reach = page.evaluate(REACH, selector)
    assert reach["page"] <= reach["viewport"], f"the page scrolls sideways: {reach}"
    assert reach["table"] <= reach["viewport"], f"{selector} runs off the right edge: {reach}"
    assert reach["cells"] <= reach["table"] + 1, f"{selector}'s columns run past its right edge: {reach}"


def test_a_newcomer_s_rough_edges_are_gone(app_server, page, shots):
    """What a newcomer met at 1400 px (issue 33): the bundled pirate data missing from the Datasets tab; Inspect with
    a base not prepared yet refused as "no dataset named 'example'" with the table replaced by the error; the
    length histogram's axis from -50; long unbroken sample answers and suite answers running off the right edge;
    headers broken inside a word; "PydanticUndefined" in the spec list; red cancel buttons on a finished job. And
    the Runs tab's Searches panel, shown a finished search whose name and a trial's value are HTML."""
    app = app_server
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with _report_on_failure(app, page, shots):
        _seed_a_finished_run_and_a_suite(app)
        _seed_a_finished_search(app)
        _open_studio(page, app.url)
        _open_tab(page, "Datasets")
        table = page.locator("#datasets-table")
        expect(table.get_by_role("row", name=re.compile(r"^pirate\b"))).to_be_visible(timeout=20_000)
        _choose(page, "dataset-base", "smollm2-135m-instruct")  # its weights are not here: its tokenizer ships
        page.locator("#dataset-inspect").click()
        stats = page.locator("#dataset-stats")
        expect(stats).to_contain_text(re.compile(r"[\d,]+ rows, [\d,]+ tokens"), timeout=60_000)
        expect(table.get_by_role("row", name=re.compile(r"^pirate\b"))).to_be_visible()
        expect(page.locator(ERROR_TOAST)).to_have_count(0)
        x_axis = page.locator("#dataset-histogram [aria-roledescription='axis'][aria-label^='X-axis']")
        expect(x_axis).to_have_attribute("aria-label", re.compile(r"values from 0 to"), timeout=20_000)
        assert page.evaluate(BROKEN_HEADERS) == []
        _shot(page, shots, "rough-datasets")

        _open_tab(page, "Runs")
        page.locator("#jobs-table").get_by_role("gridcell", name="long-answers", exact=True).click()
        summary = page.locator("#job-summary")
        expect(summary).to_contain_text("long-answers", timeout=20_000)
        expect(summary).to_contain_text("Status: succeeded")
        expect(summary).not_to_contain_text("PydanticUndefined")
        for name in ("Cancel job", "Cancel its whole sweep"):  # nothing left to stop: not red, not clickable
            button = page.get_by_role("button", name=name, exact=True)
            expect(button).to_be_disabled(timeout=20_000)
            expect(button).not_to_have_class(re.compile(r"\bstop\b"))
        page.get_by_role("button", name=re.compile(r"^Timeline and sample answers")).click()
        samples = page.locator("#run-samples")
        expect(samples).to_contain_text(f"step {SAMPLE_STEPS[-1]}", timeout=20_000)
        page.wait_for_timeout(1000)  # the table sizes its columns once its rows are in
        _expect_within_the_page(page, "#run-samples")
        assert page.evaluate(BROKEN_HEADERS) == []
        _shot(page, shots, "rough-runs")

        # A finished search's panel: its trials, the best marked, their curves, the importance chart and "Train
        # this"; its name and a trial's value, planted as HTML, reach the page as text (no dialog, no such img).
        page.get_by_role("button", name=re.compile(r"^Searches")).click()
        _choose(page, "search-picked", HOSTILE)
        expect(page.locator("#search-summary")).to_contain_text(f"{HOSTILE}: done", timeout=20_000)
        expect(page.locator("#search-summary")).to_contain_text("Best: trial 1")
        trials = page.locator("#search-trials-table")
        expect(trials.get_by_role("row")).to_have_count(4)  # the header and three trials
        expect(trials.get_by_role("row", name=re.compile("★ best"))).to_contain_text(HOSTILE)
        expect(trials.get_by_role("row", name=re.compile("★ best"))).to_contain_text("the studio's plan")
        expect(page.locator("#search-curves img, #search-curves svg").first).to_be_visible(timeout=20_000)
        expect(page.locator("#search-importance canvas, #search-importance svg").first).to_be_visible()
        expect(page.locator("#search-best-spec")).to_contain_text(HOSTILE)
        expect(page.locator("#search-train-best")).to_be_enabled()
        assert page.locator("img[src='x'], [onerror]").count() == 0 and dialogs == []
        _shot(page, shots, "rough-search")

        _open_tab(page, "Chat")
        page.get_by_role("button", name=re.compile(r"^Prompt suites")).click()
        _choose(page, "suite-name", "long-suite")
        expect(page.locator("#suite-grid")).to_contain_text("xxxxxxxx", timeout=20_000)
        page.wait_for_timeout(1000)
        _expect_within_the_page(page, "#suite-grid")
        assert page.evaluate(BROKEN_HEADERS) == []
        _shot(page, shots, "rough-chat")


WIDTHS = (1024, 1400, 1920)
TABS = ("Train", "Datasets", "Runs", "Adapters", "Evaluate", "Chat", "Account")
# What passes the viewport's right (or left) edge: the page's own width, and every visible control or text whose box
# is cut by the viewport's edge, unless it sits inside a container that scrolls sideways on its own (a wide table
# may). `overflow-x: hidden` on the page would hide the scrollbar, not the cut: the boxes are measured, not the bar.
CUT_AT_THE_EDGE = """() => {
  const width = document.documentElement.clientWidth;
  const scrollsOnItsOwn = el => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const style = getComputedStyle(p);
      if (['auto', 'scroll'].includes(style.overflowX) && p.scrollWidth > p.clientWidth) return true;
    }
    return false;
  };
  const cut = [];
  for (const el of document.querySelectorAll(
      'button, input, textarea, select, label, [role=tab], h1, h2, h3, p, td, th, img, canvas, svg')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || getComputedStyle(el).visibility === 'hidden') continue;
    if (box.right <= width + 1 && box.left >= -1) continue;
    if (scrollsOnItsOwn(el)) continue;
    cut.push(`${el.tagName.toLowerCase()}#${el.id || ''}.${[...el.classList].slice(0, 2).join('.')} ` +
             `[${Math.round(box.left)}..${Math.round(box.right)}] "${(el.innerText || el.value || '').slice(0, 40)}"`);
  }
  return {page: document.scrollingElement.scrollWidth, viewport: width, cut: cut.slice(0, 12)};
}"""


def _demo_adapters(app: AppServer, wanted: int) -> list[str]:
    """`wanted` adapters of the demo base: the ones earlier tests of this module trained, topped up with copies of
    one of them, registered in the app's database as a training child registers its adapter (the layout under test
    does not care what the weights learned; training four more would take minutes)."""
    import shutil

    from storage import catalog, jobs_repo
    from storage.access import everyone
    from storage.db import Database
    from storage.models import Adapter, JobStatus, utcnow
    from storage.settings import load_settings

    source = _an_adapter_of_the_demo_base(app)
    # Not the journey's combined adapter 'both': a combination of two 6-step adapters on the random base can answer
    # with its end token first (a 1-token reply in one CI run), an empty bubble the layout check cannot use.
    names = [a["name"] for a in _api(app).predict("demo-tiny-llama", api_name="/list_adapters") if a["name"] != "both"]
    db = Database(load_settings({"STUDIO_DATA_DIR": str(app.data_dir)}).database_url)
    with db.write() as session, everyone():
        original = catalog.get_adapter_by_name(session, source)
        for index in range(wanted - len(names)):
            name = f"wide-{index}"
            job = jobs_repo.create_job(session, name, dict(jobs_repo.get_job(session, original.job_id).spec, name=name))
            job.status, job.started_at, job.finished_at = JobStatus.SUCCEEDED, utcnow(), utcnow()
            folder = f"adapters/job-{job.id}"
            shutil.copytree(app.data_dir / original.path, app.data_dir / folder)
            session.add(Adapter(name=name, base_model=original.base_model, path=folder,
                                size_bytes=original.size_bytes, job_id=job.id, owner=original.owner))
            names.append(name)
    db.dispose()
    return names[:wanted]


def _expect_nothing_cut(page, tab: str, width: int) -> None:
    page.wait_for_timeout(400)  # the layout settles after a resize or a tab switch
    seen = page.evaluate(CUT_AT_THE_EDGE)
    assert seen["page"] <= seen["viewport"], f"{tab} at {width} px scrolls sideways: {seen}"
    assert not seen["cut"], f"{tab} at {width} px cuts these at the viewport's edge: {seen['cut']}"


def test_every_tab_fits_1024_1400_and_1920_px(app_server, page, shots):
    """Every tab, with data in it (a finished run with long sample answers, a suite run, a compare of six panes with
    their answers), at 1024, 1400 and 1920 px: the page never scrolls sideways and nothing is cut at its edge."""
    app = app_server
    with _report_on_failure(app, page, shots):
        if not any(j["name"] == "long-answers" for j in _api(app).predict(api_name="/list_jobs")):
            _seed_a_finished_run_and_a_suite(app)
        adapters = _demo_adapters(app, 5)
        _open_studio(page, app.url)
        _open_tab(page, "Chat")
        picker = page.get_by_role("combobox", name=re.compile(r"^Compare"))
        for name in adapters:
            picker.click()
            page.get_by_role("option", name=name, exact=True).click()
        page.keyboard.press("Escape")
        panes = {name: page.locator(f"#pane-{index}") for index, name in enumerate(["base", *adapters])}
        prompt = page.locator("#chat-prompt textarea")
        prompt.fill(PROMPT)
        page.keyboard.press("Enter")
        for name, pane in panes.items():
            expect(pane.get_by_test_id("bot"), name).to_have_text(re.compile(r"\S"), timeout=180_000)
        _wait_until_stable(page, panes)
        page.get_by_role("button", name=re.compile(r"^Prompt suites")).click()
        _choose(page, "suite-name", "long-suite")
        expect(page.locator("#suite-grid")).to_contain_text("xxxxxxxx", timeout=20_000)

        _open_tab(page, "Runs")
        page.locator("#jobs-table").get_by_role("gridcell", name="long-answers", exact=True).click()
        page.get_by_role("button", name=re.compile(r"^Timeline and sample answers")).click()
        expect(page.locator("#run-samples")).to_contain_text(f"step {SAMPLE_STEPS[-1]}", timeout=20_000)

        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            for tab in TABS:
                _open_tab(page, tab)
                _expect_nothing_cut(page, tab, width)
                if width == 1400:
                    _shot(page, shots, f"tab-{tab.lower()}")
