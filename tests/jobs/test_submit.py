import json
from types import SimpleNamespace

import pytest

from jobs.data.formats import DatasetError
from jobs.data.store import import_dataset
from jobs.queue.transport import pending_job_ids
from jobs.spec import SpecError, parse_spec
from jobs.submit import adapter_choices, submit_job
from storage import catalog, jobs_repo
from tests.hub_cache import cache_model


def _nothing_queued(studio):
    with studio.db.read() as s:
        assert jobs_repo.list_jobs(s) == []
    assert pending_job_ids(studio.settings) == set()


def _problems(studio, raw) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        submit_job(studio, raw)
    _nothing_queued(studio)
    return {p.field: p.message for p in caught.value.problems}


def test_valid_submit_writes_ledger_row_then_queue_message(studio):
    job_id = submit_job(studio, {"max_steps": 3}, priority=2)
    with studio.db.read() as s:
        job = jobs_repo.get_job(s, job_id)
    assert job.status == "queued" and job.priority == 2 and job.spec["max_steps"] == 3
    assert job.name == f"demo-tiny-llama-job{job_id}"
    assert pending_job_ids(studio.settings) == {job_id}


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"base_model": "/no/such/model"}, "base_model", "no model folder '/no/such/model' among the folders"),
    ({"base_model": "not a hub id!"}, "base_model", "neither"),
    ({"target_modules": ["q_proj", "wq"]}, "target_modules", "unknown module(s) wq"),
    ({"lora_r": 0}, "lora_r", "from 1 to 1024"),
    ({"lora_r": -1}, "lora_r", "from 1 to 1024"),
    ({"dataset": "missing"}, "dataset", "no dataset named 'missing'"),
    ({"rope_scaling": "linear", "rope_factor": 2}, "rope_scaling", "not needed: max_length 512 fits"),
    ({"max_length": 4096, "rope_scaling": "yarn", "rope_factor": 2}, "rope_factor", "use at least 4"),
    ({"max_length": 4096}, "max_length", "exceeds the base's context of 1024 tokens"),
    ({"rope_factor": 2}, "rope_factor", "applies only with rope_scaling"),
])
def test_bad_submissions_queue_nothing(studio, raw, field, words):
    problems = _problems(studio, raw)
    assert words in problems[field]


def test_resource_and_field_problems_come_together(studio):
    problems = _problems(studio, {"lora_r": 0, "target_modules": "wq", "dataset": "missing"})
    assert set(problems) == {"lora_r", "target_modules", "dataset"}


def test_local_model_dir_without_safetensors_is_refused(studio, tmp_path):
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "pytorch_model.bin").write_bytes(b"pickle")
    assert "safetensors" in _problems(studio, {"base_model": str(model_dir)})["base_model"]


def test_local_model_modules_are_read_from_safetensors_header(studio, demo_model_dir):
    problems = _problems(studio, {"base_model": str(demo_model_dir), "target_modules": "q_proj,w1"})
    assert "unknown module(s) w1" in problems["target_modules"]
    assert "q_proj" in problems["target_modules"]  # the message lists what the model has


def test_a_norm_is_not_a_lora_target(studio, demo_model_dir):
    problems = _problems(studio, {"base_model": str(demo_model_dir), "target_modules": ["q_proj", "input_layernorm"]})
    assert "input_layernorm: not a Linear or embedding layer" in problems["target_modules"]


def test_presets_name_only_what_the_base_has(studio):
    for preset in ("attention", "mlp", "all-linear", "embeddings"):
        assert submit_job(studio, {"target_modules": preset}) > 0
    assert submit_job(studio, {"target_modules": ["embed_tokens"]}) > 0


@pytest.mark.parametrize("targets", [["embed_tokens", "lm_head"], ["q_proj", "lm_head"]])
def test_lora_on_the_lm_head_is_refused_at_submit_not_when_the_trainer_is_built(studio, targets):
    """TRL's SFT and DPO trainers compute the loss from lm_head.weight directly and refuse a LoRA there: a job that
    asks for one used to pass submit and fail in the worker."""
    message = _problems(studio, {"target_modules": targets})["target_modules"]
    assert "LoRA cannot adapt lm_head" in message and "modules_to_save ['lm_head']" in message
    assert submit_job(studio, {"target_modules": ["embed_tokens"], "modules_to_save": ["lm_head"]}) > 0


def test_a_template_whose_only_generation_is_add_generation_prompt_is_refused(studio, demo_model_dir, tmp_path):
    import shutil

    model_dir = tmp_path / "no-markers"
    shutil.copytree(demo_model_dir, model_dir)
    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    (model_dir / "chat_template.jinja").write_text(plain)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert "no {% generation %} markers" in _problems(studio, {"base_model": str(model_dir)})["assistant_only_loss"]
    assert submit_job(studio, {"base_model": str(model_dir), "assistant_only_loss": False}) > 0


@pytest.mark.parametrize(("content", "words"), [
    ("", "empty"),
    ("{not json", "not valid JSON"),
    ('{"note": "no chat here"}', "missing columns"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "not text: it looks like a PNG image"),
])
def test_bad_dataset_uploads_are_refused(studio, tmp_path, content, words):
    path = tmp_path / "upload.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError) as caught:
        import_dataset(studio, path, "mine")
    assert any(words in p for p in caught.value.problems)
    assert _problems(studio, {"dataset": "mine"})["dataset"].startswith("no dataset named")


def test_upload_then_train_on_it(studio, tmp_path):
    path = tmp_path / "upload.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(5)))
    dataset = import_dataset(studio, path, "mine").dataset
    assert (dataset.rows, dataset.format) == (5, "completion")
    assert submit_job(studio, {"dataset": "mine"}) > 0


def test_example_name_is_reserved(studio, tmp_path):
    path = tmp_path / "upload.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completion": "a"}))
    with pytest.raises(DatasetError, match="reserved"):
        import_dataset(studio, path, "example")


HUB_BASE = "studio-test/tiny-llama"


@pytest.fixture
def hub_cache(tmp_path, demo_model_dir, monkeypatch):
    """The demo model in a fake hub cache as HUB_BASE, with the hub unreachable (offline mode)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    commit = cache_model(cache, HUB_BASE, demo_model_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return commit


def _refusal(studio, raw) -> str:
    with pytest.raises(SpecError) as caught:
        submit_job(studio, raw)
    return {p.field: p.message for p in caught.value.problems}["base_model"]


def _base_pin(studio, job_id) -> dict:
    with studio.db.read() as s:
        return jobs_repo.get_job(s, job_id).provenance["pinned"]["base_model"]


def test_a_hub_base_is_pinned_at_submit_to_the_hubs_commit_or_else_the_cached_one(studio, hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    offline = submit_job(studio, {"base_model": HUB_BASE})
    assert _base_pin(studio, offline) == {"name": HUB_BASE, "hub_id": HUB_BASE, "revision": hub_cache,
                                          "revision_from": "cache"}
    with studio.db.read() as s:
        plan = jobs_repo.get_job(s, offline).provenance["plan"]
    assert plan["tokens_counted"] and plan["chosen"]["learning_rate"] == 5e-3  # its cached config and tokenizer
    refusal = _refusal(studio, {"base_model": "studio-test/not-downloaded"})
    assert "cannot be pinned" in refusal and "HF_HUB_OFFLINE" in refusal

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the hub is unreachable
    unreachable = submit_job(studio, {"base_model": HUB_BASE})
    assert _base_pin(studio, unreachable)["revision"] == hub_cache
    assert "ConnectError" in _refusal(studio, {"base_model": "studio-test/not-downloaded"})

    newer, fetched = "f" * 40, []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda api, repo_id, **_: SimpleNamespace(sha=newer))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: fetched.append((repo_id, kw)))
    answered = submit_job(studio, {"base_model": HUB_BASE})
    assert _base_pin(studio, answered)["revision"] == newer and _base_pin(studio, answered)["revision_from"] == "hub"
    assert fetched[0][0] == HUB_BASE and fetched[0][1]["revision"] == newer  # its config and tokenizer at that commit
    assert not any("safetensors" in pattern for pattern in fetched[0][1]["allow_patterns"])  # not the weights yet


def test_a_persons_job_limit_holds_under_many_concurrent_submits(studio):
    """An attack that held, kept as a regression test: many submits at once from one person (each thread its own
    request) never queue more than their account allows, whoever wins the race."""
    from concurrent.futures import ThreadPoolExecutor

    from storage import users_repo
    from storage.access import Person, acting_as
    from tests.conftest import FAST_JOB

    with studio.db.write() as session:
        users_repo.add_user(session, "eve", "unused-hash", max_queued_jobs=3)

    def submit(index: int) -> bool:
        with acting_as(Person("eve")):
            try:
                submit_job(studio, {**FAST_JOB, "name": f"race-{index}"})
                return True
            except SpecError as error:
                assert "may have 3 at once" in error.as_text(), error.as_text()
                return False

    with ThreadPoolExecutor(8) as pool:
        accepted = sum(pool.map(submit, range(40)))
    with studio.db.read() as session:
        queued = [job for job in jobs_repo.list_jobs(session) if job.owner == "eve"]
    assert accepted == len(queued) == 3


def test_a_preference_method_on_the_wrong_data_shape_is_refused_naming_method_dataset_and_shape(studio, tmp_path):
    rows = {"pairs": [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(4)],
            "labelled": [{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 2 == 0} for i in range(4)]}
    for name, records in rows.items():
        (tmp_path / f"{name}.jsonl").write_text("\n".join(map(json.dumps, records)))
        import_dataset(studio, tmp_path / f"{name}.jsonl", name)
    refused = {("kto", "pairs"): "an unpaired dataset (prompt, completion, label)",
               ("orpo", "labelled"): "a preference dataset (prompt, chosen, rejected)",
               ("simpo", "example"): "a preference dataset (prompt, chosen, rejected)",
               ("sft", "labelled"): "or method kto"}
    for (method, dataset), words in refused.items():
        problems = _problems(studio, {"method": method, "dataset": dataset, "kto_beta": 0})
        assert set(problems) == {"method", "dataset", "kto_beta"} and words in problems["dataset"], problems
    assert "at least 2 rows a step" in _problems(studio, {"method": "kto", "dataset": "labelled",
                                                          "batch_size": 1})["batch_size"]
    for method, dataset in (("orpo", "pairs"), ("simpo", "pairs"), ("kto", "labelled")):
        assert submit_job(studio, {"method": method, "dataset": dataset, "max_steps": 2}) > 0


def test_a_tracker_not_installed_here_is_refused_at_submit(studio):
    from jobs.run_settings.speed import installed

    if installed("mlflow"):
        pytest.skip("mlflow is installed here; requirements.txt leaves it out")
    assert "mlflow is not installed on this studio" in _problems(studio, {"report_to": "mlflow"})["report_to"]


GRPO_JOB = {"method": "grpo", "dataset": "checks", "grpo_rewards": "json", "max_steps": 2}


def _reference_rows(studio):
    from jobs.data.formats import REFERENCE, ParsedDataset
    from jobs.data.store import register_parsed

    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "reference": "4"}]
    register_parsed(studio, "checks", ParsedDataset(REFERENCE, rows))


def test_grpo_refuses_the_wrong_data_shape_naming_method_and_dataset(studio):
    _reference_rows(studio)
    problems = _problems(studio, {**GRPO_JOB, "dataset": "example"})
    assert "method grpo trains on a prompt/reference dataset (prompt, reference)" in problems["dataset"]
    assert problems["method"] == problems["dataset"] and "votes" not in problems["method"]
    assert "or method grpo" in _problems(studio, {"dataset": "checks"})["method"]


def test_grpo_refuses_bad_rewards_all_at_once(studio):
    _reference_rows(studio)
    problems = _problems(studio, {**GRPO_JOB, "grpo_rewards": "json, regex, json_schema", "grpo_regex": "(a",
                                  "grpo_json_schema": '{"type": "nope"}', "eval_fraction": 0.2,
                                  "max_completion_length": 600})
    assert "not a regular expression" in problems["grpo_regex"]
    assert "not a valid JSON Schema" in problems["grpo_json_schema"]
    assert "keeps no eval split" in problems["eval_fraction"]
    assert "below max_length (512)" in problems["max_completion_length"]
    assert "give it here" in _problems(studio, {**GRPO_JOB, "grpo_rewards": "regex"})["grpo_regex"]


def test_a_grpo_reward_model_must_be_your_reward_adapter_of_this_base(studio):
    """grpo_reward_adapter: needed when the rewards name reward_model and refused otherwise; at submit, an adapter the
    person may see (another's is not found, as if it did not exist), a reward model (its adapter_config's task_type),
    of this base. The one that passes is pinned by id."""
    from jobs.training.registry import AdapterError, delete_adapter
    from storage.access import Person, acting_as
    from storage.models import Adapter

    _reference_rows(studio)
    adapters = {"rm": ("SEQ_CLS", "demo-tiny-llama", "local"), "chatty": ("CAUSAL_LM", "demo-tiny-llama", "local"),
                "rm-smol": ("SEQ_CLS", "smollm2-135m-instruct", "local"), "hers": ("SEQ_CLS", "demo-tiny-llama", "eve")}
    with studio.db.write() as session:
        for name, (task, base, owner) in adapters.items():
            folder = studio.settings.data_dir / "adapters" / name
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text(json.dumps({"task_type": task}))
            session.add(Adapter(name=name, base_model=base, path=studio.relative(folder), size_bytes=1, owner=owner))
    job = {**GRPO_JOB, "grpo_rewards": "json, reward_model:0.5"}
    assert "name your reward adapter here" in _problems(studio, job)["grpo_reward_adapter"]
    assert "applies only when" in _problems(studio, {**GRPO_JOB, "grpo_reward_adapter": "rm"})["grpo_reward_adapter"]
    for name, words in (("ghost", "no adapter named 'ghost'"), ("chatty", "'chatty' is not a reward model"),
                        ("rm-smol", "'rm-smol' was trained on 'smollm2-135m-instruct', not on 'demo-tiny-llama'")):
        assert words in _problems(studio, {**job, "grpo_reward_adapter": name})["grpo_reward_adapter"]
    with acting_as(Person("bob")):
        said = _problems(studio, {**job, "grpo_reward_adapter": "hers"})["grpo_reward_adapter"]
    assert said == "no adapter named 'hers'; train one with method reward first"  # nothing about what it is
    # The form's pickers offer what submit takes: what the person may see (without accounts, all), of this base, of
    # the kind the field names, newest first.
    assert adapter_choices(studio, "demo-tiny-llama", "grpo", "grpo_reward_adapter") == ["hers", "rm"]
    assert adapter_choices(studio, "demo-tiny-llama", "sft", "init_adapter") == ["chatty"]
    assert adapter_choices(studio, "demo-tiny-llama", "reward", "init_adapter") == ["hers", "rm"]
    assert adapter_choices(studio, "smollm2-135m-instruct", "grpo", "grpo_reward_adapter") == ["rm-smol"]
    with acting_as(Person("bob")):
        assert adapter_choices(studio, "demo-tiny-llama", "grpo", "grpo_reward_adapter") == []
    with acting_as(Person("eve")):
        assert adapter_choices(studio, "demo-tiny-llama", "grpo", "grpo_reward_adapter") == ["hers"]
    job_id = submit_job(studio, {**job, "grpo_reward_adapter": "rm"})
    with studio.db.read() as session:
        pinned = jobs_repo.pinned(jobs_repo.get_job(session, job_id))["grpo_reward_adapter"]
        assert pinned == {"id": catalog.get_adapter_by_name(session, "rm").id, "name": "rm"}
    with pytest.raises(AdapterError, match="scores with it"):  # not deleted from under the queued job
        delete_adapter(studio, "rm")


def test_reward_code_runs_only_where_the_operator_allows_it(studio):
    from dataclasses import replace

    from storage.access import Person, acting_as

    _reference_rows(studio)
    job = {**GRPO_JOB, "grpo_rewards": "code", "grpo_reward_code": "def reward(completions, **kw):\n    return []\n"}
    assert "STUDIO_USER_CODE" in _problems(studio, job)["grpo_reward_code"]
    named = replace(studio, settings=replace(studio.settings, user_code=("admins", "bob")))
    with acting_as(Person("eve")):
        assert "does not run reward code for you" in _problems(named, {**job, "dataset": "example"})[
            "grpo_reward_code"]
    assert submit_job(named, job)  # the operator's CLI, like an admin


def test_reward_code_is_checked_again_when_the_job_starts(studio):
    """The operator may turn code off after a job was queued: its training process refuses to run the code then."""
    from dataclasses import replace

    from jobs.queue.child import _owner_may_run_code
    from storage import users_repo

    allowed = replace(studio, settings=replace(studio.settings, user_code=("admins", "bob")))
    assert _owner_may_run_code(allowed, "local") and not _owner_may_run_code(studio, "local")
    with studio.db.write() as session:
        users_repo.add_user(session, "bob", "x")
        users_repo.add_user(session, "eve", "x")
    assert _owner_may_run_code(allowed, "bob") and not _owner_may_run_code(allowed, "eve")
    assert not _owner_may_run_code(allowed, "mallory")  # removed since, or never an account


def test_a_mix_is_refused_for_what_it_names_and_pinned_with_its_row_counts(studio, tmp_path):
    """A mix naming another person's dataset, or data of another kind, is refused naming dataset_mix; an accepted one
    pins every dataset (a resumed run mixes the same contents) and its plan says what it takes from each."""
    from storage import users_repo
    from storage.access import Person, acting_as

    chats, notes = tmp_path / "chats.jsonl", tmp_path / "notes.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                             for i in range(3)))
    notes.write_text("".join(json.dumps({"text": f"note {i}"}) + "\n" for i in range(3)))
    with studio.db.write() as session:
        for name in ("alice", "bob"):
            users_repo.add_user(session, name, "unused-hash")
    with acting_as(Person("alice")):
        import_dataset(studio, chats, "alice-chats")
    with acting_as(Person("bob")):
        import_dataset(studio, notes, "bob-notes")
        assert "no dataset named 'alice-chats'" in _problems(studio, {"dataset_mix": "example:0.5, alice-chats:0.5"})[
            "dataset_mix"]
        problems = _problems(studio, {"dataset_mix": "example:0.5, bob-notes:0.5", "system_prompt": "Hi",
                                      "dataset": "bob-notes", "assistant_only_loss": False,
                                      "chat_template": "{% for m in messages %}{{ m.content }}"})
        assert "'example' is chat but 'bob-notes' is raw text" in problems["dataset_mix"]
        assert "raw text" in problems["system_prompt"] and "not a valid Jinja" in problems["chat_template"]
    with acting_as(Person("alice")):
        job_id = submit_job(studio, {"dataset_mix": "example:0.5, alice-chats:0.5", "max_rows": 4, "max_steps": 1})
        with studio.db.read() as session:
            provenance = jobs_repo.get_job(session, job_id).provenance
    assert [pin["name"] for pin in provenance["pinned"]["dataset_mix"]] == ["example", "alice-chats"]
    assert provenance["plan"]["rows_taken"] == [{"dataset": "example", "rows": 2, "available": 600},
                                                {"dataset": "alice-chats", "rows": 2, "available": 3}]


def test_a_pasted_template_that_never_ends_is_refused_at_submit_and_previewed_through_the_base(studio):
    """Tried on a sample conversation in a bounded process (jobs.models.template_render): refused naming
    chat_template. The Train tab's preview renders it the same way and says why it shows the base's template."""
    from jobs.data.preview import run_preview
    from tests.jobs.models.test_template_render import NESTED_LOOP

    raw = {"chat_template": NESTED_LOOP, "assistant_only_loss": False, "max_steps": 1}
    assert "rendering took longer than 2 s" in _problems(studio, raw)["chat_template"]
    preview = run_preview(studio, parse_spec(raw), 2)
    assert preview.template_note.startswith("chat_template: rendering took longer than 2 s")
    assert len(preview.texts) == 2
