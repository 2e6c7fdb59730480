"""Two people on one studio, through every API endpoint gradio_client lists: Bob cannot list, read, cancel,
download, chat with or vote on Alice's jobs, datasets or adapters; an admin sees them. A real app with Gradio's
login against the accounts in the ledger, and a real worker that trains Alice's adapter."""

import functools
import json
import time

import pytest
from gradio_client import Client, handle_file

from app.accounts import PASSWORDS, check_login
from app.server import build_app, launch_options
from storage import users_repo
from tests.conftest import FAST_JOB, LiveStudio
from tests.servers import free_port

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
BASE = "demo-tiny-llama"
NO_TOKEN = {"stored": False, "hint": None, "uses": "none"}


@pytest.fixture(scope="module")
def team(tmp_path_factory, demo_model_dir):
    root = tmp_path_factory.mktemp("security")
    live = LiveStudio(root / "data", demo_model_dir, root / "worker.log")
    with live.studio.db.write() as session:
        for name, admin, upload in (("alice", False, None), ("bob", False, 4096), ("root", True, None)):
            users_repo.add_user(session, name, PASSWORDS.hash(PASSWORD), admin=admin, max_upload_bytes=upload)
    live.start_worker()
    app = build_app(live.studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               auth=functools.partial(check_login, live.studio), **launch_options(live.studio))
    clients = {name: Client(app.local_url, auth=(name, PASSWORD), verbose=False) for name in ("alice", "bob", "root")}
    yield live, clients, root
    app.close()
    live.stop_worker()


def _wait(client: Client, job_id: int) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.predict(job_id, api_name="/get_job")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish")


def _alice_makes_things(alice: Client, root) -> dict:
    data = root / "alice.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(24)))
    assert alice.predict(handle_file(str(data)), "alice-data",
                         api_name="/import_dataset") == "alice-data"
    spec = {**FAST_JOB, "name": "alice-adapter", "dataset": "alice-data", "eval_fraction": 0}
    sweep = alice.predict(json.dumps(spec), "lora_r: [8]", "grid", "alice-sweep", api_name="/submit_sweep")
    job_id = sweep["job_ids"][0]
    finished = _wait(alice, job_id)
    assert finished["status"] == "succeeded", finished["error"]
    adapter = finished["adapter"]
    alice.predict(BASE, "hello", [{"adapter": adapter, "reply": "hi"}, {"adapter": "base", "reply": "yo"}],
                  "best", 0, api_name="/record_vote")
    alice.predict("alice-suite", "say hi => hi", api_name="/save_suite")
    assert alice.predict("hf_alice_secret_7f3e9d", api_name="/set_hub_token")["hint"] == "…3e9d"
    return {"job": job_id, "data": data, "adapter": adapter}


def _refused(call, *words: str) -> None:
    with pytest.raises(Exception) as caught:
        call()
    text = str(caught.value)
    assert any(word in text for word in words), text


def test_bob_reaches_none_of_alices_work_through_any_endpoint(team):
    live, clients, root = team
    alice, bob, admin = clients["alice"], clients["bob"], clients["root"]
    made = _alice_makes_things(alice, root)
    job, adapter = made["job"], made["adapter"]
    p = bob.predict
    not_found = ("no job with id", "is not queued", "only an admin")

    # Every endpoint the API lists has a case below (a new endpoint without one fails here).
    cases = {
        "/submit_job": lambda: _refused(lambda: p(json.dumps({**FAST_JOB, "dataset": "alice-data"}), 0,
                                                  api_name="/submit_job"), "no dataset named 'alice-data'"),
        "/submit_sweep": lambda: _refused(lambda: p(json.dumps({**FAST_JOB, "init_adapter": adapter}),
                                                    "lora_r: [8]", api_name="/submit_sweep"), adapter),
        "/cancel_sweep": lambda: _refused(lambda: p("alice-sweep", api_name="/cancel_sweep"), "no sweep", "alice"),
        "/get_job": lambda: _refused(lambda: p(job, api_name="/get_job"), *not_found),
        "/list_jobs": lambda: _assert(job not in {j["id"] for j in p(api_name="/list_jobs")}),
        "/cancel_job": lambda: _refused(lambda: p(job, api_name="/cancel_job"), *not_found),
        "/move_job": lambda: _refused(lambda: p(job, "front", api_name="/move_job"), *not_found),
        "/set_priority": lambda: _refused(lambda: p(job, 5, api_name="/set_priority"), *not_found),
        "/list_workers": lambda: _assert(all(w["current_job_id"] != job for w in p(api_name="/list_workers"))),
        "/list_adapters": lambda: _assert(p("", api_name="/list_adapters") == []),
        "/download_adapter": lambda: _refused(lambda: p(adapter, api_name="/download_adapter"), "no adapter"),
        "/rename_adapter": lambda: _refused(lambda: p(adapter, "mine", api_name="/rename_adapter"),
                                            "no adapter"),
        "/delete_adapter": lambda: _refused(lambda: p(adapter, api_name="/delete_adapter"), "no adapter"),
        "/merge_adapter": lambda: _refused(lambda: p(adapter, api_name="/merge_adapter"), "no adapter"),
        "/download_merged": lambda: _refused(lambda: p(adapter, api_name="/download_merged"), "no adapter"),
        "/push_to_hub": lambda: _refused(lambda: p(adapter, "bob/x", api_name="/push_to_hub"), "no adapter"),
        "/hub_token_status": lambda: _assert(p(api_name="/hub_token_status") == NO_TOKEN),  # hers is not his
        "/set_hub_token": lambda: _assert(p("hf_bob_own_4c21", api_name="/set_hub_token")["hint"] == "…c21"),
        "/clear_hub_token": lambda: _assert(p(api_name="/clear_hub_token") == NO_TOKEN),
        "/compare": lambda: _refused(lambda: p("hi", [adapter, "base"], BASE, 4, api_name="/compare"),
                                     adapter),
        "/import_dataset": lambda: _bob_imports(p, made["data"], root),
        "/import_hub_dataset": lambda: _refused(lambda: p("someone/data", "alice-data",
                                                          api_name="/import_hub_dataset"), "alice-data", "hub"),
        "/list_datasets": lambda: _assert("alice-data" not in {d["name"] for d in p(api_name="/list_datasets")}),
        "/dataset_stats": lambda: _refused(lambda: p("alice-data", BASE, api_name="/dataset_stats"),
                                           "no dataset named"),
        "/rename_dataset": lambda: _refused(lambda: p("alice-data", "mine", api_name="/rename_dataset"),
                                            "no dataset named"),
        "/delete_dataset": lambda: _refused(lambda: p("alice-data", api_name="/delete_dataset"), "no dataset named"),
        "/record_vote": lambda: _refused(lambda: p(BASE, "hi", [{"adapter": adapter, "reply": "x"},
                                                               {"adapter": "base", "reply": "y"}], "best", 0,
                                                   api_name="/record_vote"), "no adapter"),
        "/leaderboard": lambda: _assert(p(BASE, api_name="/leaderboard") == []),
        "/export_votes": lambda: _refused(lambda: p(BASE, "bob-votes", True, adapter,  # her votes are not his
                                                    api_name="/export_votes"), "no decided blind vote"),
        "/save_suite": lambda: _refused(lambda: p("alice-suite", "mine", api_name="/save_suite"), "already named"),
        "/run_suite": lambda: _refused(lambda: p("alice-suite", ["base"], BASE, api_name="/run_suite"), "no prompt"),
        "/suite_results": lambda: _refused(lambda: p("alice-suite", BASE, api_name="/suite_results"), "no prompt"),
    }
    listed = set(bob.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert set(cases) == listed, set(cases) ^ listed
    for name, case in cases.items():
        try:
            case()
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None

    # Nothing Bob tried changed Alice's work, and Alice still sees all of it.
    assert _wait(alice, job)["adapter"] == adapter
    assert "alice-data" in {d["name"] for d in alice.predict(api_name="/list_datasets")}
    assert [a["name"] for a in alice.predict("", api_name="/list_adapters")] == [adapter]
    assert [row["adapter"] for row in alice.predict(BASE, api_name="/leaderboard")] != []
    assert alice.predict("alice-suite", BASE, api_name="/suite_results")["prompts"][0]["prompt"] == "say hi"
    assert alice.predict(api_name="/hub_token_status") == {"stored": True, "hint": "…3e9d", "uses": "yours"}
    # An admin sees everyone's work.
    assert admin.predict(job, api_name="/get_job")["adapter"] == adapter
    assert {adapter} <= {a["name"] for a in admin.predict("", api_name="/list_adapters")}


def _assert(condition: bool) -> None:
    assert condition


def _bob_imports(predict, alices_file, root) -> None:
    """The same bytes as Alice's file become Bob's own dataset (no hint of hers); a file over his limit is refused."""
    message = predict(handle_file(str(alices_file)), "bob-data",
                      api_name="/import_dataset")
    assert message == "bob-data"
    big = root / "big.jsonl"
    big.write_text(json.dumps({"text": "x" * 5000}) + "\n")
    _refused(lambda: predict(handle_file(str(big)), "big",
                             api_name="/import_dataset"), "the limit of bob's account")
