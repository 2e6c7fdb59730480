"""Combining adapters: what submit refuses, every problem at once and each naming its field, before anything is
queued (the rules read the parents' adapter_config.json only; no model is loaded)."""

import json

import pytest

from jobs.combine_rules import Parent, combination_problems
from jobs.spec import SpecError
from jobs.submit import submit_combine
from jobs.training.registry import AdapterError, delete_adapter
from storage import jobs_repo
from storage.access import Person, acting_as
from storage.models import Adapter, JobKind

LORA = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}


def _parent(name: str, base: str = "demo-tiny-llama", **config) -> Parent:
    return Parent(name, base, {**LORA, **config})


def _fields(problems) -> list[str]:
    return [problem.field for problem in problems]


CASES = {  # what is asked -> the fields refused (an empty list: accepted)
    "linear, same rank": (dict(), []),
    "one adapter": (dict(parents=[_parent("a")], weights=[1.0]), ["adapters"]),
    "two bases": (dict(parents=[_parent("a"), _parent("b", base="other")]), ["adapters"]),
    "ranks differ for linear": (dict(parents=[_parent("a"), _parent("b", r=16)]), ["combination_type"]),
    "ranks differ for ties": (dict(parents=[_parent("a"), _parent("b", r=16)], combination_type="ties"),
                              ["combination_type"]),
    "ranks differ for cat": (dict(parents=[_parent("a"), _parent("b", r=16)], combination_type="cat"), []),
    "ranks differ for svd": (dict(parents=[_parent("a"), _parent("b", r=16)], combination_type="svd"), []),
    "targets differ": (dict(parents=[_parent("a"), _parent("b", target_modules=["q_proj", "k_proj"])]), []),
    "pattern and list targets": (dict(parents=[_parent("a"), _parent("b", target_modules=".*proj")]), ["adapters"]),
    "DoRA": (dict(parents=[_parent("a", use_dora=True), _parent("b")]), ["adapters"]),
    "fully trained head": (dict(parents=[_parent("a"), _parent("b", modules_to_save=["lm_head"])]), ["adapters"]),
    "weights out of range": (dict(weights=[2.5, 0.0]), ["weights", "weights"]),
    "weights miscounted": (dict(weights=[1.0]), ["weights"]),
    "density out of range": (dict(combination_type="dare_ties", density=0.0), ["density"]),
    "density unused by linear": (dict(density=7.0), []),
    "unknown type": (dict(combination_type="average"), ["combination_type"]),
    "sign method": (dict(combination_type="ties", majority_sign_method="most"), ["majority_sign_method"]),
    "svd_rank for linear": (dict(svd_rank=4), ["svd_rank"]),
    "cat over the largest rank": (dict(parents=[_parent("a", r=1000), _parent("b", r=100)], combination_type="cat"),
                                  ["combination_type"]),
    "bad name": (dict(name="../x"), ["name"]),
    "nine adapters": (dict(parents=[_parent(f"a{i}") for i in range(9)], weights=[1.0] * 9), ["adapters"]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_rules_refuse_what_peft_refuses_or_mangles(case):
    asked, refused = CASES[case]
    arguments = {"name": "mix", "parents": [_parent("a"), _parent("b")], "weights": [1.0, 0.5],
                 "combination_type": "linear", "density": 0.5, "majority_sign_method": "total", "svd_rank": 0,
                 **asked}
    problems = combination_problems(**arguments)
    assert _fields(problems) == refused, problems
    assert all(problem.message for problem in problems)


def test_every_problem_is_said_at_once():
    problems = combination_problems("", [_parent("a", use_dora=True), _parent("b", base="x", r=4)], [9.0],
                                    "ties", 2.0, "total", 0)
    assert sorted(set(_fields(problems))) == ["adapters", "combination_type", "density", "name", "weights"]


def _add_adapter(studio, name: str, owner: str = "local", **config) -> None:
    folder = studio.absolute(f"adapters/{name}")
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({**LORA, **config}))
    with studio.db.write() as session:
        session.add(Adapter(name=name, base_model="demo-tiny-llama", path=f"adapters/{name}", size_bytes=1,
                            owner=owner))


def test_submit_refuses_everything_at_once_and_queues_nothing(studio):
    _add_adapter(studio, "a")
    _add_adapter(studio, "b", r=16)
    _add_adapter(studio, "taken")
    _add_adapter(studio, "hers", owner="alice")
    with acting_as(Person("local")), pytest.raises(SpecError) as caught:
        submit_combine(studio, "taken", ["a", "b", "hers", "a"], [1.0, 3.0, 1.0, 1.0], "linear")
    text = caught.value.as_text()
    for words in ("name: an adapter or active job is already named 'taken'", "adapters: no adapter named 'hers'",
                  "adapters: 'a' is listed more than once", "combination_type: linear needs adapters of one rank",
                  "weights: weight 2 must be from -2 to 2"):
        assert words in text, text
    with studio.db.read() as session:
        assert jobs_repo.list_jobs(session) == []


def test_another_persons_adapter_is_as_if_it_did_not_exist(studio):
    _add_adapter(studio, "mine", owner="bob")
    _add_adapter(studio, "hers", owner="alice")
    with acting_as(Person("bob")), pytest.raises(SpecError) as caught:
        submit_combine(studio, "mix", ["mine", "hers"])
    assert [str(p) for p in caught.value.problems] == ["adapters: no adapter named 'hers'"]


def test_a_good_combination_is_queued_with_its_parents_pinned(studio):
    _add_adapter(studio, "a")
    _add_adapter(studio, "b")
    job_id = submit_combine(studio, "mix", ["a", "b"], [0.7, 0.3], "dare_ties", density=0.4)
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
    assert job.kind == JobKind.COMBINE and job.name == "mix" and job.status == "queued"
    assert [(p["adapter"], p["weight"]) for p in job.spec["parents"]] == [("a", 0.7), ("b", 0.3)]
    assert job.spec["density"] == 0.4 and job.spec["majority_sign_method"] == "total"
    assert job.spec["svd_rank"] is None
    with pytest.raises(SpecError, match="name: an adapter or active job is already named 'mix'"):
        submit_combine(studio, "mix", ["a", "b"])  # the queued job will publish that name
    with pytest.raises(AdapterError, match="continues from 'b', scores with it or combines it"):
        delete_adapter(studio, "b")  # the queued job will read it
