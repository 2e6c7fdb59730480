"""Submit-time refusals around reward models, on a real studio without a worker (fast: nothing trains): a reward
job on data without pairs, an adapter of the other kind to continue, a reward adapter sent to merge, GGUF, chat or a
generating evaluation. Each names its field and says why; nothing is queued."""

import json

import pytest

from jobs.chat.request import ChatRequestError, resolve_panes
from jobs.evaluate.submit import submit_eval
from jobs.spec_words import SpecError
from jobs.submit import submit_export, submit_job, submit_merge
from storage import jobs_repo
from storage.access import LOCAL_OWNER, Person
from storage.models import Adapter

DEMO = "demo-tiny-llama"


def _adapter(studio, name: str, task_type: str) -> None:
    """An adapter row and the one file that tells its kind (peft's adapter_config.json)."""
    folder = studio.settings.adapters_dir / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"task_type": task_type, "r": 4}))
    with studio.db.write() as session:
        session.add(Adapter(name=name, base_model=DEMO, path=studio.relative(folder), size_bytes=1, owner="local"))


def _fields(call) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        call()
    return {p.field: p.message for p in caught.value.problems}


def test_reward_models_are_refused_where_they_cannot_work(studio):
    _adapter(studio, "rm", "SEQ_CLS")
    _adapter(studio, "chat", "CAUSAL_LM")
    on_chats = _fields(lambda: submit_job(studio, {"method": "reward", "dataset": "example"}))
    assert "method reward trains on a preference dataset (prompt, chosen, rejected)" in on_chats["dataset"]
    assert "method" in on_chats
    assert "only method reward continues it" in _fields(
        lambda: submit_job(studio, {"method": "sft", "init_adapter": "rm"}))["init_adapter"]
    assert "generates text" in _fields(
        lambda: submit_job(studio, {"method": "reward", "init_adapter": "chat"}))["init_adapter"]
    for call in (lambda: submit_merge(studio, "rm"), lambda: submit_export(studio, "rm")):
        assert "is a reward model" in _fields(call)["adapter"]
    with pytest.raises(ChatRequestError, match="'rm' is a reward model"):  # chat panes, and /v1's model
        resolve_panes(studio, DEMO, ["rm"])
    from app.web.openai_api import _models  # /v1/models lists what generates

    listed = [m["id"] for m in _models(studio, Person(LOCAL_OWNER))["data"]]
    assert "chat" in listed and "rm" not in listed
    mixed = _fields(lambda: submit_eval(studio, {"adapters": ["rm", "chat"], "source": "suite", "suite": "s",
                                                 "judge": "base"}))
    assert "evaluate reward models apart" in mixed["adapters"] and "scored on pairs" in mixed["judge"]
    assert "preference pairs" in mixed["source"]
    not_pairs = _fields(lambda: submit_eval(studio, {"adapters": ["rm"], "source": "dataset", "dataset": "example"}))
    assert "choose a preference dataset" in not_pairs["dataset"]
    with studio.db.read() as session:
        assert jobs_repo.list_jobs(session) == []
