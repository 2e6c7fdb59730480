"""Every API endpoint through gradio_client against a launched app, with a real worker behind it."""

import json
import socket
import zipfile

import pytest
from gradio_client import Client

from app.server import build_app
from tests.conftest import FAST_JOB

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(live):
    app = build_app(live.studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(live.studio.settings.exports_dir)])
    yield Client(app.local_url, verbose=False)
    app.close()


def test_endpoint_names(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/submit_job", "/get_job", "/list_jobs", "/cancel_job", "/list_adapters", "/download_adapter",
            "/compare"} <= names
    assert "/tick" not in names  # the Runs timer is not part of the API


def test_bad_submit_names_every_problem(client):
    with pytest.raises(Exception) as caught:
        client.predict(json.dumps({"lora_r": 0, "target_modules": "wq", "dataset": "nope"}), 0, api_name="/submit_job")
    message = str(caught.value)
    assert "lora_r" in message and "wq" in message and "dataset" in message
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict("{oops", 0, api_name="/submit_job")


def test_train_list_download_and_compare(client, live, tmp_path):
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

    replies = client.predict("What is 2 plus 3?", ["api-a", "api-b", "base"], "demo-tiny-llama", 12, 0.0, 1.0, 0, "",
                             api_name="/compare")
    assert [r["adapter"] for r in replies] == ["api-a", "api-b", "base"]
    assert all(isinstance(r["reply"], str) for r in replies)


def test_bad_compare_and_download_and_cancel_are_explained(client):
    with pytest.raises(Exception, match="no adapter named 'ghost'"):
        client.predict("hi", ["ghost", "base"], api_name="/compare")
    with pytest.raises(Exception, match="max_new_tokens"):
        client.predict("hi", ["base"], "demo-tiny-llama", 0, api_name="/compare")
    with pytest.raises(Exception, match="no adapter named"):
        client.predict("../../etc/passwd", api_name="/download_adapter")
    with pytest.raises(Exception, match="no job with id 424242"):
        client.predict(424242, api_name="/cancel_job")


def test_cancel_job_endpoint(client):
    job_id = client.predict(json.dumps({**FAST_JOB, "max_steps": 300}), 5, api_name="/submit_job")
    job = client.predict(job_id, api_name="/get_job")
    assert job["queue_position"] in (None, 1)  # highest priority: first in line (or already running)
    status = client.predict(job_id, api_name="/cancel_job")
    assert status in ("cancelled", "running")
    assert _wait(client, job_id)["status"] == "cancelled"


def _wait(client, job_id, timeout_s=300):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.predict(job_id, api_name="/get_job")
        if job["status"] in ("succeeded", "failed", "cancelled"):
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
