"""Every API endpoint through gradio_client against a launched app, with a real worker behind it."""

import json
import zipfile

import pytest
from gradio_client import Client

from app.web.server import build_app, launch_options
from tests.conftest import FAST_JOB, seed_model
from tests.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(live):
    app = build_app(live.studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               **launch_options(live.studio))
    yield Client(app.local_url, verbose=False)
    app.close()


PUBLIC_ENDPOINTS = {"/submit_job", "/submit_sweep", "/cancel_sweep", "/get_job", "/list_jobs", "/cancel_job",
                    "/move_job", "/set_priority", "/list_workers", "/list_adapters", "/download_adapter",
                    "/rename_adapter", "/delete_adapter", "/merge_adapter", "/download_merged", "/export_gguf",
                    "/download_gguf", "/push_to_hub",
                    "/set_hub_token", "/clear_hub_token", "/hub_token_status", "/compare", "/import_dataset",
                    "/import_hub_dataset", "/list_datasets", "/dataset_stats",
                    "/rename_dataset", "/delete_dataset", "/record_vote", "/leaderboard", "/export_votes",
                    "/save_suite", "/run_suite", "/suite_results", "/list_presets", "/save_preset", "/load_preset",
                    "/delete_preset", "/share_preset", "/my_account", "/change_password", "/audit_log",
                    "/list_suites", "/suite_diff", "/plan_job", "/base_model_info", "/estimate_memory",
                    "/preview_dataset", "/job_script", "/compare_runs", "/job_metrics", "/sample_answers",
                    "/create_api_key", "/revoke_api_key", "/set_wandb_key", "/clear_wandb_key", "/wandb_key_status",
                    "/combine_adapters", "/submit_eval", "/eval_results",
                    "/export_eval", "/start_search", "/list_searches", "/search_result", "/train_search_best",
                    "/cancel_search"}


def test_only_the_public_endpoints_are_listed(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == PUBLIC_ENDPOINTS  # no form callbacks, timers or table loaders
    assert api["unnamed_endpoints"] == {}


def test_an_expected_error_logs_one_line_and_no_traceback(client, capfd, caplog):
    with caplog.at_level("INFO", logger="app"), pytest.raises(Exception, match="no job with id 424242"):
        client.predict(424242, api_name="/get_job")
    refused = [r.getMessage() for r in caplog.records if r.name == "app" and "424242" in r.getMessage()]
    assert refused == ["refused: job_id: no job with id 424242"]
    assert "Traceback" not in capfd.readouterr().err


def test_bad_submit_names_every_problem(client):
    with pytest.raises(Exception) as caught:
        client.predict(json.dumps({"lora_r": 0, "target_modules": "wq", "dataset": "nope"}), 0, api_name="/submit_job")
    message = str(caught.value)
    assert "lora_r" in message and "wq" in message and "dataset" in message
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict("{oops", 0, api_name="/submit_job")


def test_train_list_download_and_compare(client, live, tmp_path, monkeypatch):
    for token in ("STUDIO_HF_TOKEN", "HF_TOKEN"):  # the push below must find none configured
        monkeypatch.delenv(token, raising=False)
    job_id = client.predict(json.dumps({**FAST_JOB, "name": "api-a"}), 0, api_name="/submit_job")
    second = client.predict(json.dumps({**FAST_JOB, "name": "api-b", "seed": 7}), 0, api_name="/submit_job")
    assert isinstance(job_id, int) and second == job_id + 1
    for wanted in (job_id, second):
        job = _wait(client, wanted)
        assert job["status"] == "succeeded", job["error"]
    job = client.predict(job_id, api_name="/get_job")
    assert job["adapter"] == "api-a" and job["metrics"]["loss"] is not None and "attempt 1" in job["log_tail"]
    assert {j["id"] for j in client.predict(api_name="/list_jobs")} >= {job_id, second}
    adapters = {a["name"]: a for a in client.predict("demo-tiny-llama", api_name="/list_adapters")}
    assert {"api-a", "api-b"} <= set(adapters)

    archive = client.predict("api-a", api_name="/download_adapter")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {"api-a/adapter_config.json", "api-a/adapter_model.safetensors", "api-a/README.md",
            "api-a/training_spec.json", "api-a/final_metrics.json", "api-a/tokenizer.json"} <= names
    _loads_with_plain_peft(archive, live.data_dir / "models" / "demo-tiny-llama", tmp_path)

    replies = client.predict("What is 2 plus 3?", ["api-a", "api-b", "base"], "demo-tiny-llama", 12, 1.0, 1.0, 0, "",
                             api_name="/compare")
    assert [r["adapter"] for r in replies] == ["api-a", "api-b", "base"]
    texts = {r["adapter"]: r["reply"] for r in replies}
    assert all(text.strip() for text in texts.values()), texts
    # Same prompt, seed and sampling settings: only the adapter differs, so the trained ones must answer otherwise.
    assert texts["api-a"] != texts["base"] and texts["api-b"] != texts["base"], texts
    _merge_and_download(client, tmp_path)
    _rename_download_and_delete(client, live)


def _merge_and_download(client, tmp_path) -> None:
    """A merge runs as a job on the worker; its zip holds a folder plain transformers loads."""
    from transformers import AutoModelForCausalLM

    with pytest.raises(Exception, match="no merged model yet"):
        client.predict("api-a", api_name="/download_merged")
    job = _wait(client, client.predict("api-a", "float32", api_name="/merge_adapter"))
    assert job["status"] == "succeeded" and job["kind"] == "merge", job["error"]
    with zipfile.ZipFile(client.predict("api-a", api_name="/download_merged")) as zipped:
        zipped.extractall(tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "api-a-merged")
    assert model.config.hidden_size == 128
    _export_gguf(client, tmp_path)
    with pytest.raises(Exception, match="No hub token is configured"):
        client.predict("api-a", "me/api-a", "adapter", True, api_name="/push_to_hub")


def _export_gguf(client, tmp_path) -> None:
    """The GGUF export runs as a job (from the merged model just built); its zip holds the GGUFs, the Modelfile and a
    README; transformers' GGUF reader loads the model. q4_k_m is refused at submit, naming why, where llama.cpp's
    quantizer is missing; a quantization that does not exist is refused naming the field."""
    from transformers import AutoModelForCausalLM

    from jobs.training.gguf import quantizer_problem

    with pytest.raises(Exception, match="has no q8_0 GGUF yet"):
        client.predict("api-a", "q8_0", api_name="/download_gguf")
    with pytest.raises(Exception, match="quantization"):
        client.predict("api-a", "q3_k", api_name="/export_gguf")
    if quantizer_problem():
        with pytest.raises(Exception, match="q4_k_m needs llama.cpp's quantizer"):
            client.predict("api-a", "q4_k_m", api_name="/export_gguf")
    job = _wait(client, client.predict("api-a", "q8_0", api_name="/export_gguf"))
    assert job["status"] == "succeeded" and job["kind"] == "export", job["error"]
    assert [a["gguf"] for a in _adapters(client) if a["name"] == "api-a"] == [["q8_0"]]
    with zipfile.ZipFile(client.predict("api-a", "q8_0", api_name="/download_gguf")) as zipped:
        assert {"api-a-gguf-q8_0/model-q8_0.gguf", "api-a-gguf-q8_0/Modelfile", "api-a-gguf-q8_0/lora-f16.gguf",
                "api-a-gguf-q8_0/README.md"} <= set(zipped.namelist())
        zipped.extractall(tmp_path / "gguf")
    folder = tmp_path / "gguf" / "api-a-gguf-q8_0"
    assert (folder / "Modelfile").read_text().startswith("FROM ./model-q8_0.gguf\nTEMPLATE")
    assert AutoModelForCausalLM.from_pretrained(folder, gguf_file="model-q8_0.gguf").config.hidden_size == 128


def _rename_download_and_delete(client, live) -> None:
    """api-b is renamed (its files stay put), downloads under the new name, then goes: files and row together."""
    from storage import catalog

    with live.studio.db.read() as session:
        folder = live.studio.absolute(catalog.get_adapter_by_name(session, "api-b").path)
    assert client.predict("api-b", "api-b2", api_name="/rename_adapter") == "api-b2"
    assert "api-b" not in {a["name"] for a in _adapters(client)} and folder.is_dir()
    with zipfile.ZipFile(client.predict("api-b2", api_name="/download_adapter")) as zipped:
        assert zipped.read("api-b2/README.md").decode().splitlines()[5] == "# api-b2"
    with pytest.raises(Exception, match="already named 'api-a'"):
        client.predict("api-b2", "api-a", api_name="/rename_adapter")
    client.predict("api-b2", api_name="/delete_adapter")
    assert "api-b2" not in {a["name"] for a in _adapters(client)}
    assert not folder.exists() and not list(folder.parent.glob(".deleting-*"))


def _adapters(client) -> list[dict]:
    return client.predict("", api_name="/list_adapters")


def test_import_dataset_through_the_api(client, tmp_path):
    from gradio_client import handle_file

    rows = tmp_path / "mine.jsonl"
    rows.write_text('{"prompt": "Say hi.", "completion": "Hi."}\n{"prompt": "Say bye.", "completion": "Bye."}\n')
    assert client.predict(handle_file(str(rows)), "api-data", api_name="/import_dataset") == "api-data"
    picture = tmp_path / "picture.jsonl"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(Exception, match="not text: it looks like a PNG image"):
        client.predict(handle_file(str(picture)), "pic", api_name="/import_dataset")


def test_bad_compare_and_download_and_cancel_are_explained(client):
    with pytest.raises(Exception, match="no adapter named 'ghost'"):
        client.predict("hi", ["ghost", "base"], api_name="/compare")
    with pytest.raises(Exception, match="max_new_tokens"):
        client.predict("hi", ["base"], "demo-tiny-llama", 0, api_name="/compare")
    with pytest.raises(Exception, match="'someone/elses-model' is not a base this studio knows"):
        client.predict("hi", ["base"], "someone/elses-model", api_name="/compare")  # never downloaded by chat
    with pytest.raises(Exception, match="at most 6 panes at once"):  # the Chat tab's cap holds for the API
        client.predict("hi", ["base", *[f"a{i}" for i in range(6)]], api_name="/compare")
    with pytest.raises(Exception, match="no adapter named"):
        client.predict("../../etc/passwd", api_name="/download_adapter")
    with pytest.raises(Exception, match="no job with id 424242"):
        client.predict(424242, api_name="/cancel_job")
    for beyond_64_bits in (2**70, -(2**70)):
        with pytest.raises(Exception, match="no job with id"):
            client.predict(beyond_64_bits, api_name="/get_job")
    with pytest.raises(Exception, match="spec: is empty"):
        client.predict("{}", 0, api_name="/submit_job")
    with pytest.raises(Exception, match="priority: must be from"):
        client.predict('{"max_steps": 2}', 2**70, api_name="/submit_job")


def test_a_prompt_suite_through_the_api(client):
    saved = client.predict("api-suite", "What is 2 plus 3? => 5\nName a colour.", api_name="/save_suite")
    assert "2 prompts" in saved
    assert client.predict("api-suite", ["base"], "demo-tiny-llama", 4, api_name="/run_suite") == 2
    grid = client.predict("api-suite", "demo-tiny-llama", api_name="/suite_results")
    assert grid["panes"] == ["base"] and len(grid["answers"]) == 2
    assert [p["reference"] for p in grid["prompts"]] == ["5", None] and grid["mean_loglik"]["base"] < 0
    with pytest.raises(Exception, match="line 1 has '=>' but no reference"):
        client.predict("api-suite", "a prompt =>", api_name="/save_suite")
    with pytest.raises(Exception, match="no prompt suite named 'nope'"):
        client.predict("nope", ["base"], api_name="/run_suite")


def test_cancel_job_endpoint(client, live):
    blocker = client.predict(json.dumps({**FAST_JOB, "max_steps": 400}), 0, api_name="/submit_job")
    _wait(client, blocker, statuses=("running",))
    low = client.predict(json.dumps(FAST_JOB), 0, api_name="/submit_job")
    high = client.predict(json.dumps(FAST_JOB), 5, api_name="/submit_job")
    # The worker is busy with the blocker, so the line is pinned: higher priority first, then oldest.
    assert [client.predict(j, api_name="/get_job")["queue_position"] for j in (high, low)] == [1, 2]
    assert client.predict(high, api_name="/get_job")["queue_length"] == 2
    assert client.predict(high, api_name="/cancel_job") == "cancelled"
    assert client.predict(low, api_name="/get_job")["queue_position"] == 1
    assert client.predict(low, api_name="/cancel_job") == "cancelled"
    assert client.predict(blocker, api_name="/cancel_job") == "running"  # asked to stop at its next step
    assert _wait(client, blocker)["status"] == "cancelled"
    assert [client.predict(j, api_name="/get_job")["attempt"] for j in (high, low)] == [0, 0]  # never started


def test_jobs_run_in_the_order_the_queue_shows_after_a_move(client, live):
    blocker = client.predict(json.dumps({**FAST_JOB, "max_steps": 400}), 0, api_name="/submit_job")
    _wait(client, blocker, statuses=("running",))
    low_1, low_2 = (client.predict(json.dumps(FAST_JOB), 0, api_name="/submit_job") for _ in range(2))
    high = client.predict(json.dumps(FAST_JOB), 5, api_name="/submit_job")
    assert client.predict(low_2, "front", api_name="/move_job") == [low_2, high, low_1]
    shown = sorted((low_1, low_2, high), key=lambda j: client.predict(j, api_name="/get_job")["queue_position"])
    assert shown == [low_2, high, low_1]  # what the Runs tab shows
    assert client.predict(low_1, 9, api_name="/set_priority") == [low_1, low_2, high]
    assert client.predict(low_1, "back", api_name="/move_job") == [low_2, high, low_1]
    workers = client.predict(api_name="/list_workers")
    assert len(workers) == 1 and workers[0]["current_job_id"] == blocker and "CPU" in workers[0]["device_name"]
    client.predict(blocker, api_name="/cancel_job")
    finished = [_wait(client, job_id) for job_id in (low_2, high, low_1)]
    assert all(job["status"] == "succeeded" for job in finished), finished
    started = [job["started_at"] for job in finished]
    assert started == sorted(started)  # the worker took them in exactly the order shown
    with pytest.raises(Exception, match="is not queued"):
        client.predict(low_1, "front", api_name="/move_job")


def test_the_real_offline_model_trains_and_answers_otherwise_than_its_base(client, live, smollm2_dir):
    seed_model(live.data_dir, smollm2_dir)  # prepared once per run (conftest); a job would prepare it the same way
    job_id = client.predict(json.dumps({"base_model": "smollm2-135m-instruct", "dataset": "pirate", "name": "api-smol",
                                        "max_steps": 6, "lora_r": 16, "lora_alpha": 32, "learning_rate": 0.003,
                                        "batch_size": 2, "max_length": 256, "eval_fraction": 0,
                                        "sample_prompts": 0}), 0,  # CI time: the demo's jobs test the samples
                            api_name="/submit_job")
    job = _wait(client, job_id, timeout_s=900)
    assert job["status"] == "succeeded", job["error"]
    replies = client.predict("What is the capital of Japan?", ["api-smol", "base"], "smollm2-135m-instruct", 20,
                             0.0, 1.0, 0, "", api_name="/compare")
    texts = {r["adapter"]: r["reply"] for r in replies}
    assert all(text.strip() for text in texts.values()) and texts["api-smol"] != texts["base"], texts
    assert "Tokyo" in texts["base"]  # a real model: the base knows the answer


def test_a_two_by_two_sweep_is_one_group_that_finishes(client):
    done = client.predict(json.dumps({**FAST_JOB, "max_steps": 2, "name": "grid"}), "lora_r: [4, 8]\nseed: [1, 2]",
                          "grid", "api-sweep", 0, api_name="/submit_sweep")
    assert done["group"] == "api-sweep" and len(done["job_ids"]) == 4
    finished = [_wait(client, job_id) for job_id in done["job_ids"]]
    assert [job["status"] for job in finished] == ["succeeded"] * 4
    assert {job["group_name"] for job in finished} == {"api-sweep"}
    assert sorted((j["spec"]["lora_r"], j["spec"]["seed"]) for j in finished) == [(4, 1), (4, 2), (8, 1), (8, 2)]
    with pytest.raises(Exception, match="point 2: must be a whole number from 1 to 1024"):
        client.predict(json.dumps(FAST_JOB), "lora_r: [4, 0]", "grid", "bad-sweep", 0, api_name="/submit_sweep")


def _wait(client, job_id, timeout_s=300, statuses=("succeeded", "failed", "cancelled")):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.predict(job_id, api_name="/get_job")
        if job["status"] in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_only_exports_are_served(client, live):
    import urllib.error
    import urllib.request

    base = client.src.rstrip("/")
    for path in (live.data_dir / "studio.db", live.data_dir / "queue.db", "/etc/passwd", "README.md"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/gradio_api/file={path}")
        assert refused.value.code == 403, path


def _loads_with_plain_peft(archive: str, base_dir, tmp_path) -> None:
    """What a user does elsewhere with the download: unzip, load on the 4-bit base, generate."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "unzipped")
    adapter_dir = tmp_path / "unzipped" / "api-a"
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32))
    model = PeftModel.from_pretrained(base, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    messages = [{"role": "user", "content": "Opposite of hot?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=4).shape[1] > inputs["input_ids"].shape[1]
    assert list(model.peft_config) == ["default"]
