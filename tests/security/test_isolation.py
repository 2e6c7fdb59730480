"""Two people on one studio, through every API endpoint gradio_client lists: Bob cannot list, read, cancel,
download, chat with or vote on Alice's jobs, datasets, adapters, presets, suites or hub token; an admin sees them.
A real app with the studio's sign-in against the accounts in the ledger, and a real worker that trains Alice's
adapter (tests/security/conftest.py)."""

import json
import time

import pytest
from gradio_client import handle_file

from tests.conftest import FAST_JOB
from tests.security.conftest import BASE

pytestmark = pytest.mark.slow
NO_TOKEN = {"stored": False, "hint": None, "uses": "none"}
NO_KEY = {"stored": False, "hint": None}


def _alice_makes_things(team, bob) -> dict:
    alice, root = team.client("alice"), team.root
    data = root / "alice.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(24)))
    assert alice.predict(handle_file(str(data)), "alice-data",
                         api_name="/import_dataset") == "alice-data"
    spec = {**FAST_JOB, "name": "alice-adapter", "dataset": "alice-data", "eval_fraction": 0}
    sweep = alice.predict(json.dumps(spec), "lora_r: [8]", "grid", "alice-sweep", api_name="/submit_sweep")
    job_id = sweep["job_ids"][0]
    busy = _while_running(team, job_id, lambda: bob.predict(api_name="/list_workers"))
    assert busy and all(w["current_job_id"] is None and w.get("busy") for w in busy if w.get("busy")), busy
    assert any(w.get("busy") for w in busy), busy  # he sees the worker is taken, never by which job
    finished = team.wait("alice", job_id)
    assert finished["status"] == "succeeded", finished["error"]
    adapter = finished["adapter"]
    # A search of hers, stopped at once: what Bob must not see is its record, not its training.
    searched = json.dumps({**spec, "eval_fraction": 0.2})
    assert alice.predict(searched, "learning_rate: {low: 0.0001, high: 0.01}", 1, 0, 1, "hyperband", "alice-search",
                         api_name="/start_search") == {"name": "alice-search"}
    assert alice.predict("alice-search", api_name="/cancel_search") == "cancelled"
    alice.predict(BASE, "hello", [{"adapter": adapter, "reply": "hi"}, {"adapter": "base", "reply": "yo"}],
                  "best", 0, api_name="/record_vote")
    alice.predict("alice-suite", "say hi => hi", api_name="/save_suite")
    alice.predict("alice-preset", json.dumps({"lora_r": 4}), api_name="/save_preset")
    assert alice.predict("hf_alice_secret_7f3e9d", api_name="/set_hub_token")["hint"] == "…3e9d"
    assert alice.predict("wandb_alice_secret_91ab", api_name="/set_wandb_key")["hint"] == "…91ab"
    alice_key = alice.predict(api_name="/create_api_key")["key"]
    return {"job": job_id, "data": data, "adapter": adapter, "alice_key": alice_key}


def _while_running(team, job_id: int, look):
    """What `look()` returns while the job runs (Alice's worker holds it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = team.client("alice").predict(job_id, api_name="/get_job")["status"]
        if status == "running":
            return look()
        if status in ("succeeded", "failed", "cancelled"):
            raise AssertionError(f"job {job_id} ended ({status}) before it was seen running")
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never ran:\n{team.live.worker_log()}")


def _says_only_not_found(preview: str) -> None:
    """The preview is the panel's text, refusals included: it names no row of hers."""
    assert "no dataset named 'alice-data'" in preview.lower() and "q1" not in preview and "a1" not in preview, preview


def _refused(call, *words: str) -> None:
    with pytest.raises(Exception) as caught:
        call()
    text = str(caught.value)
    assert any(word in text for word in words), text


def test_bob_reaches_none_of_alices_work_through_any_endpoint(team):
    alice, bob, admin = team.client("alice"), team.client("bob"), team.client("root")
    root = team.root
    made = _alice_makes_things(team, bob)
    job, adapter = made["job"], made["adapter"]
    p = bob.predict
    not_found = ("no job with id", "is not queued", "only an admin")

    # Every endpoint the API lists has a case below (a new endpoint without one fails here).
    cases = {
        "/submit_job": lambda: [
            _refused(lambda: p(json.dumps({**FAST_JOB, "dataset": "alice-data"}), 0, api_name="/submit_job"),
                     "no dataset named 'alice-data'"),
            # her adapter as his GRPO reward model: not found, as if it did not exist (not "not a reward model")
            _refused(lambda: p(json.dumps({**FAST_JOB, "method": "grpo", "grpo_rewards": "reward_model",
                                           "grpo_reward_adapter": adapter}), 0, api_name="/submit_job"),
                     f"grpo_reward_adapter: no adapter named '{adapter}'")],
        "/submit_sweep": lambda: _refused(lambda: p(json.dumps({**FAST_JOB, "init_adapter": adapter}),
                                                    "lora_r: [8]", api_name="/submit_sweep"), adapter),
        "/cancel_sweep": lambda: _refused(lambda: p("alice-sweep", api_name="/cancel_sweep"), "no sweep", "alice"),
        "/start_search": lambda: _refused(lambda: p(json.dumps({**FAST_JOB, "dataset": "alice-data"}),
                                                    "lora_r: {low: 4, high: 8}", 2, api_name="/start_search"),
                                          "no dataset named 'alice-data'"),
        "/list_searches": lambda: _assert("alice-search" not in {s["name"] for s in p(api_name="/list_searches")}),
        "/search_result": lambda: _refused(lambda: p("alice-search", api_name="/search_result"), "no search named"),
        "/train_search_best": lambda: _refused(lambda: p("alice-search", api_name="/train_search_best"),
                                               "no search named"),
        "/cancel_search": lambda: _refused(lambda: p("alice-search", api_name="/cancel_search"), "no search named"),
        "/get_job": lambda: _refused(lambda: p(job, api_name="/get_job"), *not_found),
        "/list_jobs": lambda: _assert(job not in {j["id"] for j in p(api_name="/list_jobs")}),
        "/cancel_job": lambda: _refused(lambda: p(job, api_name="/cancel_job"), *not_found),
        "/move_job": lambda: _refused(lambda: p(job, "front", api_name="/move_job"), *not_found),
        "/set_priority": lambda: _refused(lambda: p(job, 5, api_name="/set_priority"), *not_found),
        "/list_workers": lambda: _assert(all(w["current_job_id"] != job for w in p(api_name="/list_workers"))),
        # (and while her job ran, above: busy, without its id)
        "/list_adapters": lambda: _assert(p("", api_name="/list_adapters") == []),
        "/download_adapter": lambda: _refused(lambda: p(adapter, api_name="/download_adapter"), "no adapter"),
        "/rename_adapter": lambda: _refused(lambda: p(adapter, "mine", api_name="/rename_adapter"),
                                            "no adapter"),
        "/delete_adapter": lambda: _refused(lambda: p(adapter, api_name="/delete_adapter"), "no adapter"),
        "/merge_adapter": lambda: _refused(lambda: p(adapter, api_name="/merge_adapter"), "no adapter"),
        "/download_merged": lambda: _refused(lambda: p(adapter, api_name="/download_merged"), "no adapter"),
        "/combine_adapters": lambda: _refused(lambda: p("bob-mix", [adapter, "bob-none"], [1.0, 1.0],
                                                        api_name="/combine_adapters"), f"no adapter named '{adapter}'"),
        "/export_gguf": lambda: _refused(lambda: p(adapter, "q8_0", api_name="/export_gguf"), "no adapter"),
        "/download_gguf": lambda: _refused(lambda: p(adapter, "q8_0", api_name="/download_gguf"), "no adapter"),
        "/push_to_hub": lambda: _refused(lambda: p(adapter, "bob/x", api_name="/push_to_hub"), "no adapter"),
        "/hub_token_status": lambda: _assert(p(api_name="/hub_token_status") == NO_TOKEN),  # hers is not his
        "/set_hub_token": lambda: _assert(p("hf_bob_own_4c21", api_name="/set_hub_token")["hint"] == "…c21"),
        "/clear_hub_token": lambda: _assert(p(api_name="/clear_hub_token") == NO_TOKEN),
        "/wandb_key_status": lambda: _assert(p(api_name="/wandb_key_status") == NO_KEY),  # hers is not his
        "/set_wandb_key": lambda: _assert(p("wandb_bob_own_77d2", api_name="/set_wandb_key")["hint"] == "…77d2"),
        "/clear_wandb_key": lambda: _assert(p(api_name="/clear_wandb_key") == NO_KEY),
        "/compare": lambda: _refused(lambda: p("hi", [adapter, "base"], BASE, 4, api_name="/compare"),
                                     adapter),
        "/import_dataset": lambda: _bob_imports(p, made["data"], root),
        "/import_hub_dataset": lambda: _hub_ids_name_no_server_folder(p),
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
        "/export_votes": lambda: [_refused(lambda m=method: p(BASE, "bob-votes", True, adapter, 4, m,  # not his
                                                              api_name="/export_votes"), "no decided blind vote")
                                  for method in ("dpo", "kto")],  # as pairs or as KTO's labelled answers
        "/save_suite": lambda: _refused(lambda: p("alice-suite", "mine", api_name="/save_suite"), "already named"),
        "/run_suite": lambda: _refused(lambda: p("alice-suite", ["base"], BASE, api_name="/run_suite"), "no prompt"),
        "/suite_results": lambda: _refused(lambda: p("alice-suite", BASE, api_name="/suite_results"), "no prompt"),
    }
    cases.update({
        "/list_presets": lambda: _assert(p(api_name="/list_presets") == []),
        "/load_preset": lambda: _refused(lambda: p("alice/alice-preset", api_name="/load_preset"), "no preset named"),
        "/save_preset": lambda: _assert(p("alice-preset", '{"lora_r": 64}', api_name="/save_preset") == "alice-preset"),
        "/delete_preset": lambda: _refused(lambda: p("alice/alice-preset", api_name="/delete_preset"),
                                           "no preset named"),
        "/share_preset": lambda: _refused(lambda: p("alice/alice-preset", True, api_name="/share_preset"),
                                          "only an admin shares"),
        "/my_account": lambda: _assert(p(api_name="/my_account")["name"] == "bob"),
        "/change_password": lambda: _refused(lambda: p("not his password", "a new password!",
                                                       api_name="/change_password"), "current password: does not"),
        "/audit_log": lambda: _refused(lambda: p(api_name="/audit_log"), "only an admin"),
        # his own key, never hers: hers still lists her adapter; his, revoked, no longer works
        "/create_api_key": lambda: _assert(_v1(team, made.setdefault("bob_key", p(api_name="/create_api_key")["key"]),
                                               "GET", "models", owner="bob")[0] == 200),
        "/revoke_api_key": lambda: _assert(p(api_name="/revoke_api_key") == {"stored": False, "hint": None}
                                           and _v1(team, made["bob_key"], "GET", "models")[0] == 401),
    })
    hers = json.dumps({**FAST_JOB, "dataset": "alice-data"})
    continued = json.dumps({**FAST_JOB, "init_adapter": adapter})
    cases.update({  # what the Train, Runs and Chat tabs show beside their forms
        "/plan_job": lambda: _refused(lambda: p(hers, api_name="/plan_job"), "no dataset named 'alice-data'"),
        "/estimate_memory": lambda: _refused(lambda: p(continued, api_name="/estimate_memory"), adapter),
        "/preview_dataset": lambda: _says_only_not_found(p(hers, api_name="/preview_dataset")),
        "/job_script": lambda: _refused(lambda: p(continued, api_name="/job_script"), adapter),
        "/compare_runs": lambda: _refused(lambda: p([job], "alice-sweep", True, api_name="/compare_runs"),
                                          *not_found, "no sweep"),
        "/job_metrics": lambda: _refused(lambda: p(job, [], api_name="/job_metrics"), *not_found),
        "/sample_answers": lambda: _refused(lambda: p(job, api_name="/sample_answers"), *not_found),
        "/list_suites": lambda: _assert("alice-suite" not in p(api_name="/list_suites")),
        "/suite_diff": lambda: _refused(lambda: p("alice-suite", "base", adapter, BASE, api_name="/suite_diff"),
                                        "no prompt", "has no answers"),
        # Her adapter, her job's held-out rows, her suite: each refused as not found (her job's id stands in for an
        # evaluation of hers: results are read through the same ownership lookup, kind checked after it).
        "/submit_eval": lambda: _refused(lambda: p(json.dumps({"adapters": [adapter], "train_job": job}), 0,
                                                   api_name="/submit_eval"), "no adapter"),
        "/eval_results": lambda: _refused(lambda: p(job, 5, api_name="/eval_results"), *not_found),
        "/export_eval": lambda: _refused(lambda: p(job, "predictions", "json", api_name="/export_eval"), *not_found),
        "/base_model_info": lambda: _refused(lambda: p(str(team.live.studio.settings.data_dir),
                                                       api_name="/base_model_info"), "base_model", "folder"),
    })
    listed = set(bob.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert set(cases) == listed, set(cases) ^ listed
    for name, case in cases.items():
        try:
            case()
        except (AssertionError, pytest.fail.Exception) as error:  # a refusal that did not come: name the endpoint
            raise AssertionError(f"{name}: {error}") from None

    # The OpenAI-compatible API (/v1, app/web/openai_api.py): with his own key Bob lists none of her adapters and
    # asking for hers is 404, as if it did not exist; without a key, nothing. Every /v1 route has a case here.
    from app.web.openai_api import build

    bob_key = p(api_name="/create_api_key")["key"]
    ask = {"model": adapter, "max_tokens": 4}
    v1_cases = {
        "/v1/models": lambda: _assert(adapter not in {m["id"] for m in _v1(team, bob_key, "GET", "models")[1]["data"]}
                                      and _v1(team, None, "GET", "models")[0] == 401),
        "/v1/chat/completions": lambda: _assert(_v1(team, bob_key, "POST", "chat/completions", {
            **ask, "messages": [{"role": "user", "content": "hi"}]})[0] == 404),
        "/v1/completions": lambda: _assert(_v1(team, bob_key, "POST", "completions",
                                               {**ask, "prompt": "hi"})[0] == 404),
    }
    routes = {route.path for route in build(team.app_studio, lambda: None).routes if route.path.startswith("/v1/")}
    assert set(v1_cases) == routes, set(v1_cases) ^ routes
    for name, case in v1_cases.items():
        try:
            case()
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
    assert adapter in {m["id"] for m in _v1(team, made["alice_key"], "GET", "models")[1]["data"]}

    # Nothing Bob tried changed Alice's work, and Alice still sees all of it.
    assert team.wait("alice", job)["adapter"] == adapter
    assert "alice-data" in {d["name"] for d in alice.predict(api_name="/list_datasets")}
    assert [a["name"] for a in alice.predict("", api_name="/list_adapters")] == [adapter]
    assert [row["adapter"] for row in alice.predict(BASE, api_name="/leaderboard")] != []
    assert alice.predict("alice-suite", BASE, api_name="/suite_results")["prompts"][0]["prompt"] == "say hi"
    assert alice.predict(api_name="/hub_token_status") == {"stored": True, "hint": "…3e9d", "uses": "yours"}
    assert alice.predict(api_name="/wandb_key_status") == {"stored": True, "hint": "…91ab"}
    assert "alice-preset" in alice.predict(api_name="/list_presets")
    assert alice.predict("alice-preset", api_name="/load_preset") == {"lora_r": 4}  # Bob's same name is his own
    # An admin sees everyone's work.
    assert admin.predict(job, api_name="/get_job")["adapter"] == adapter
    assert {adapter} <= {a["name"] for a in admin.predict("", api_name="/list_adapters")}
    assert admin.predict("alice-search", api_name="/search_result")["owner"] == "alice"
    assert alice.predict("alice-search", api_name="/search_result")["state"] == "cancelled"


def _v1(team, key: str | None, method: str, path: str, body: dict | None = None, owner: str | None = None):
    """(status, JSON) of a /v1 call with API key `key`; `owner`: also check it lists only that person's adapters."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.request(method, team.url.rstrip("/") + "/v1/" + path, json=body, headers=headers, timeout=120)
    if owner is not None and answer.status_code == 200:
        assert {m["owned_by"] for m in answer.json()["data"] if m.get("kind") == "adapter"} <= {owner}
    return answer.status_code, answer.json()


def _hub_ids_name_no_server_folder(predict) -> None:
    """A hub id is owner/name and nothing else: ids that name the server's folders are refused before any lookup."""
    for hub_id in ("../data/datasets", "/etc", "./alice", "https://evil.example/x", "a/b/c", "~alice/x"):
        _refused(lambda h=hub_id: predict(h, "stolen", api_name="/import_hub_dataset"), "hub_id")
    assert "stolen" not in {d["name"] for d in predict(api_name="/list_datasets")}


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
