"""A job on a local base folder must not break the job list and job view through the API: Gradio's client took the
pinned base (a dict with a string "path") for a file to download, and the server refused it (403), for everyone."""

import pytest
from gradio_client import Client

from app.web.server import build_app, launch_options
from jobs.submit import submit_job
from tests.servers import free_port

pytestmark = pytest.mark.slow


def _paths(value) -> list:
    """Every dict in an API answer that Gradio's client would take for a file."""
    if isinstance(value, dict):
        found = [value] if isinstance(value.get("path"), str) else []
        return found + [p for item in value.values() for p in _paths(item)]
    if isinstance(value, list):
        return [p for item in value for p in _paths(item)]
    return []


def test_a_job_on_a_local_base_is_listed_and_shown(studio):
    base = str(studio.settings.models_dir / "demo-tiny-llama")  # a local folder the studio may load from
    job_id = submit_job(studio, {"base_model": base, "max_steps": 2})
    app = build_app(studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
               **launch_options(studio))
    try:
        client = Client(app.local_url, verbose=False)
        listed = client.predict(api_name="/list_jobs")
        shown = client.predict(job_id, api_name="/get_job")
    finally:
        app.close()
    assert [job["spec"]["base_model"] for job in listed if job["id"] == job_id] == [base]
    assert shown["spec"]["base_model"] == base
    assert shown["provenance"]["pinned"]["base_model"]["local_path"] == base
    assert _paths(listed) == [] and _paths(shown) == []
