"""Reward-model training on the demo base, on CPU, for real (TRL's RewardTrainer on a 4-bit sequence classifier with
a SEQ_CLS LoRA): on a trivially separable pair set the loss falls and the held-out pairs' margin is reported; the
saved adapter is a reward adapter with its score head; a stopped run resumes from its checkpoint."""

import json

import pytest
from safetensors.torch import load_file

from jobs.data.formats import PREFERENCE, ParsedDataset
from jobs.data.store import store_parsed
from jobs.models.reward_adapters import is_reward_adapter
from jobs.spec import parse_spec
from jobs.training.train import train
from storage.models import Metric

pytestmark = pytest.mark.slow
REWARD = {"method": "reward", "max_steps": 6, "batch_size": 4, "max_length": 64, "eval_fraction": 0.25,
          "eval_steps": 6, "logging_steps": 1, "save_steps": 3, "learning_rate": 2e-2, "lora_r": 4,
          "target_modules": "attention", "sample_prompts": 0}


def separable_pairs(count: int = 16) -> list[dict]:
    """Chosen always says one word, rejected another: a reward model separates them in a few steps."""
    return [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": "yes yes yes"}],
             "rejected": [{"role": "assistant", "content": "no no no"}]} for i in range(count)]


def test_reward_model_trains_separates_pairs_and_resumes(tmp_path, demo_model_dir):
    data, _ = store_parsed(ParsedDataset(PREFERENCE, separable_pairs()), tmp_path / "data")
    spec = parse_spec(REWARD)
    logged: dict[int, dict] = {}

    def sink(step, values, total):
        logged.setdefault(step, {}).update(values)

    # Stopped after its first checkpoint (step 3), then resumed from it: the existing resume path.
    first = train(spec, tmp_path / "run", str(demo_model_dir), data, sink, lambda: any(s >= 3 for s in logged))
    assert first.stopped and list((tmp_path / "run" / "checkpoints").glob("checkpoint-3"))
    result = train(spec, tmp_path / "run", str(demo_model_dir), data, sink, lambda: False)
    assert not result.stopped and result.final_metrics["steps"] == 6
    losses = [values["loss"] for _, values in sorted(logged.items()) if "loss" in values]
    assert losses[-1] < losses[0], losses
    assert {"eval_accuracy", "eval_margin"} <= result.final_metrics.keys()
    assert any("margin" in values for values in logged.values())  # the run page's curve of the pairs
    from app import views

    curves = views.run_curves([Metric(name=name, step=step, value=value) for step, values in logged.items()
                               for name, value in values.items()], views.TIMELINES["reward model's pairs"])
    assert curves["score margin (train)"] and curves["pairwise accuracy (eval)"]
    assert result.final_metrics["eval_accuracy"] == 1.0 and result.final_metrics["eval_margin"] > 0
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert any(".score." in key for key in load_file(result.adapter_dir / "adapter_model.safetensors"))
    assert is_reward_adapter(result.adapter_dir)


def test_a_reward_job_through_the_queue_is_marked_refused_by_chat_and_scored_by_eval(live):
    """One reward job on the live studio and worker: the registry marks its adapter, chat (and so /v1, which
    resolves panes the same way), merge and GGUF refuse it naming why, the eval job scores its held-out pairs, a GRPO
    job scores with it, and a reward job on data without pairs is refused naming the field and the shape."""
    from app.adapters.tab import adapter_list
    from jobs.chat.request import ChatRequestError, resolve_panes
    from jobs.data.store import find_dataset, register_parsed
    from jobs.evaluate import results as eval_results
    from jobs.evaluate.submit import submit_eval
    from jobs.spec_words import SpecError
    from jobs.submit import submit_export, submit_jobs, submit_merge
    from storage import catalog

    studio = live.studio
    if find_dataset(studio, "reward-pairs") is None:
        register_parsed(studio, "reward-pairs", ParsedDataset(PREFERENCE, separable_pairs()))
    with pytest.raises(SpecError) as refused:  # the example chats have no pairs
        submit_jobs(studio, [{**REWARD, "dataset": "example", "name": "reward-on-chats"}])
    assert "method reward trains on a preference dataset (prompt, chosen, rejected)" in str(refused.value)
    assert {p.field for p in refused.value.problems} >= {"method", "dataset"}

    # Short: the resume path is the test above's; this one is the queue's, registry's, chat's and eval's.
    [job_id] = submit_jobs(studio, [{**REWARD, "max_steps": 4, "eval_steps": 4, "save_steps": 100,
                                     "dataset": "reward-pairs", "name": "rm-live"}])
    assert live.wait_for(job_id).status == "succeeded", live.worker_log()
    with studio.db.read() as session:
        adapter = catalog.adapter_for_job(session, job_id)
    assert next(a for a in adapter_list(studio) if a["name"] == adapter.name)["reward_model"] is True
    with pytest.raises(ChatRequestError) as chat:
        resolve_panes(studio, adapter.base_model, [adapter.name])
    assert "is a reward model" in str(chat.value) and "does not generate" in str(chat.value)
    for refuse in (lambda: submit_merge(studio, adapter.name), lambda: submit_export(studio, adapter.name)):
        with pytest.raises(SpecError) as merge:
            refuse()
        assert merge.value.problems[0].field == "adapter" and "is a reward model" in str(merge.value)

    eval_id = submit_eval(studio, {"adapters": [adapter.name], "source": "held_out", "train_job": job_id})
    assert live.wait_for(eval_id).status == "succeeded", live.worker_log()
    found = eval_results.eval_results(studio, eval_id)
    assert found["kind"] == "reward" and found["panes"] == [adapter.name]  # the base has no score head
    scores = found["metrics"][adapter.name]
    assert scores["pairwise_accuracy"] == 1.0 and scores["mean_margin"] > 0
    assert found["rows"] == 4 and eval_results.row_view(found)[0][f"{adapter.name} margin"] > 0

    # A GRPO job scores its answers with it (grpo_reward_adapter, pinned by id): through the queue, the child loads it
    # on a second copy of the base and its reward term's mean reaches the job's metrics.
    from jobs.data.formats import REFERENCE
    from storage import jobs_repo
    from tests.jobs.training.test_grpo import GRPO, reference_rows

    if find_dataset(studio, "rm-prompts") is None:
        register_parsed(studio, "rm-prompts", ParsedDataset(REFERENCE, reference_rows(2)))
    [grpo_id] = submit_jobs(studio, [{**GRPO, "max_steps": 1, "dataset": "rm-prompts", "name": "grpo-rm-live",
                                      "grpo_rewards": "reward_model, length:0.5", "grpo_reward_adapter": adapter.name}])
    assert live.wait_for(grpo_id).status == "succeeded", live.worker_log()
    with studio.db.read() as session:
        assert jobs_repo.pinned(jobs_repo.get_job(session, grpo_id))["grpo_reward_adapter"]["id"] == adapter.id
        assert jobs_repo.metric_values(session, grpo_id, "rewards/reward_model/mean")
        scored = catalog.adapter_for_job(session, grpo_id)
    assert f"the reward model `{adapter.name}`" in (studio.absolute(scored.path) / "README.md").read_text()
