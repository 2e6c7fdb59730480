"""Blind votes: a round trip stores the right adapter as chosen, the leaderboard follows the votes, and the votes
export as a preference dataset that `datasets` loads."""

import pytest
from datasets import load_dataset

from jobs.chat.request import ChatRequestError
from jobs.chat.votes import Verdict, base_leaderboard, bradley_terry, export_votes, record_vote, shuffled
from jobs.submit import submit_job
from storage import catalog, votes_repo
from storage.models import Adapter

BASE = "demo-tiny-llama"
PROMPT = [{"role": "user", "content": "What is 2 plus 2?"}]
SETTINGS = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": 0}


def _adapters(studio, *names):
    with studio.db.write() as session:
        for name in names:
            session.add(Adapter(name=name, base_model=BASE, path=f"adapters/{name}", size_bytes=1))


def _round(studio, order, best=None, outcome="best"):
    answers = [{"adapter": name, "reply": f"{name} says {i}"} for i, name in enumerate(order)]
    index = order.index(best) if best else None
    return record_vote(studio, BASE, PROMPT, answers, Verdict(outcome, index), SETTINGS)


def test_a_blind_round_stores_the_pane_voted_for_as_chosen(studio):
    _adapters(studio, "first", "second")
    order = shuffled(["base", "first", "second"], seed=3)
    assert sorted(order) == ["base", "first", "second"]
    vote = _round(studio, order, best="second")
    with studio.db.read() as session:
        stored = votes_repo.votes_for(session, BASE)
    assert [v.id for v in stored] == [vote.id]
    assert stored[0].chosen == "second" and stored[0].outcome == "best"
    assert [a["adapter"] for a in stored[0].answers] == order  # the order the panes showed them
    assert stored[0].prompt == PROMPT and stored[0].settings == SETTINGS
    first_id = next(a["adapter_id"] for a in stored[0].answers if a["adapter"] == "first")
    with studio.db.read() as session:
        assert catalog.get_adapter_by_name(session, "first").id == first_id


def test_bad_votes_are_refused_with_every_problem(studio):
    _adapters(studio, "first")
    with pytest.raises(ChatRequestError) as caught:
        record_vote(studio, BASE, PROMPT, [{"adapter": "first", "reply": ""}], Verdict("best", 4), SETTINGS)
    assert len(caught.value.problems) == 2  # one pane, no pane 4; an empty reply is an answer (next test)
    with pytest.raises(ChatRequestError, match="no adapter of 'demo-tiny-llama' named 'ghost'"):
        record_vote(studio, BASE, PROMPT, [{"adapter": "ghost", "reply": "a"}, {"adapter": "base", "reply": "b"}],
                    Verdict("tie"), SETTINGS)


def test_an_empty_reply_is_an_answer_to_vote_on_and_export_leaves_out_the_rows_it_cannot_train(studio):
    """A model can end its reply at once (the tiny demo model does at a high temperature): the round is answered and
    the person may judge it, but the preference and KTO sets leave out the rows whose answer would be empty (the
    importer refuses an empty assistant turn)."""
    _adapters(studio, "first")
    empty_wins = [{"adapter": "first", "reply": ""}, {"adapter": "base", "reply": "four"}]
    record_vote(studio, BASE, PROMPT, empty_wins, Verdict("best", 0), SETTINGS)
    with pytest.raises(ValueError, match="no decided blind vote"):
        export_votes(studio, BASE, "only-empty")
    record_vote(studio, BASE, PROMPT, empty_wins, Verdict("best", 1), SETTINGS)  # "four" over nothing
    with pytest.raises(ValueError, match="an empty answer"):
        export_votes(studio, BASE, "only-empty")
    record_vote(studio, BASE, PROMPT, [{"adapter": "first", "reply": "five"}, {"adapter": "base", "reply": "  "}],
                Verdict("all_bad"), SETTINGS)
    record_vote(studio, BASE, PROMPT, [{"adapter": "first", "reply": "4"}, {"adapter": "base", "reply": "four"}],
                Verdict("best", 0), SETTINGS)
    standings, count = base_leaderboard(studio, BASE)
    assert count == 4 and {s.name: s.wins for s in standings} == {"first": 2, "base": 1}
    loaded = load_dataset("json", data_files=str(studio.absolute(export_votes(studio, BASE, "pairs").dataset.path)),
                          split="train")  # the empty answer is never chosen or rejected
    assert [(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in loaded] == [("4", "four")]
    from jobs.data.formats import UNPAIRED

    loaded = load_dataset("json", data_files=str(studio.absolute(export_votes(studio, BASE, "kto", UNPAIRED)
                                                                .dataset.path)), split="train")
    labelled = [(row["completion"][0]["content"], row["label"]) for row in loaded]
    assert labelled == [("four", True), ("five", False), ("4", True)]


def test_the_leaderboard_follows_the_votes(studio):
    _adapters(studio, "first", "second")
    _round(studio, ["first", "base"], best="first")
    standings, count = base_leaderboard(studio, BASE)
    assert count == 1 and [s.name for s in standings] == ["first", "base"]
    for _ in range(3):
        _round(studio, ["second", "first"], best="second")
    _round(studio, ["second", "base"], outcome="tie")
    standings, count = base_leaderboard(studio, BASE)
    by_name = {s.name: s for s in standings}
    assert count == 5 and standings[0].name == "second"
    assert (by_name["second"].rounds, by_name["second"].wins, by_name["second"].ties) == (4, 3, 1)
    assert by_name["first"].win_rate == pytest.approx(1 / 4)
    assert by_name["second"].score > by_name["first"].score > by_name["base"].score


def test_bradley_terry_matches_the_win_odds_it_was_fitted_to():
    # 30 wins to 10 between two players: odds of 3 to 1, shrunk a little toward even by the prior games.
    scores = bradley_terry(["a", "b"], {("a", "b"): 30.0, ("b", "a"): 10.0})
    odds = 10 ** ((scores["a"] - scores["b"]) / 400)
    assert 2.5 < odds < 3.0
    assert bradley_terry(["a", "b"], {("a", "b"): 1.0, ("b", "a"): 1.0}) == pytest.approx({"a": 1000, "b": 1000})


def test_votes_export_as_a_preference_dataset_that_datasets_loads(studio):
    _adapters(studio, "first", "second")
    _round(studio, ["first", "second", "base"], best="first")
    _round(studio, ["second", "base"], outcome="all_bad")
    from jobs.data.errors import DatasetError

    for bad in ("", "example", "a/b"):
        with pytest.raises(DatasetError, match="name: "):
            export_votes(studio, BASE, bad)
    dataset = export_votes(studio, BASE, "prefs").dataset
    assert dataset.format == "preference" and dataset.rows == 2
    loaded = load_dataset("json", data_files=str(studio.absolute(dataset.path)), split="train")
    assert len(loaded) == 2 and set(loaded.column_names) == {"prompt", "chosen", "rejected"}
    assert loaded[0]["prompt"] == PROMPT
    assert loaded[0]["chosen"] == [{"role": "assistant", "content": "first says 0"}]
    assert {row["rejected"][0]["content"] for row in loaded} == {"second says 1", "base says 2"}
    # The exported set trains with dpo, and SFT refuses it.
    assert submit_job(studio, {"method": "dpo", "dataset": "prefs", "init_adapter": "first", "max_steps": 2}) > 0
    from jobs.spec import SpecError

    with pytest.raises(SpecError) as caught:
        submit_job(studio, {"dataset": "prefs"})
    assert [p.field for p in caught.value.problems] == ["method", "dataset"]


def test_votes_export_for_kto_label_winners_true_and_all_bad_answers_false_and_only_the_voters(studio):
    from jobs.data.formats import UNPAIRED
    from jobs.spec import SpecError
    from storage.access import Person, acting_as

    _adapters(studio, "first", "second")
    _round(studio, ["first", "second", "base"], best="first")  # second and base were only worse: no row
    _round(studio, ["second", "base"], outcome="all_bad")
    _round(studio, ["first", "base"], outcome="tie")  # judges nothing
    dataset = export_votes(studio, BASE, "kto-votes", UNPAIRED).dataset
    assert dataset.format == UNPAIRED and dataset.rows == 3
    loaded = load_dataset("json", data_files=str(studio.absolute(dataset.path)), split="train")
    assert set(loaded.column_names) == {"prompt", "completion", "label"}
    assert [(row["completion"][0]["content"], row["label"]) for row in loaded] == [
        ("first says 0", True), ("second says 0", False), ("base says 1", False)]
    assert submit_job(studio, {"method": "kto", "dataset": "kto-votes", "max_steps": 2, "eval_fraction": 0}) > 0
    with pytest.raises(SpecError) as caught:  # pairs for DPO are another shape
        submit_job(studio, {"method": "dpo", "dataset": "kto-votes"})
    assert [p.field for p in caught.value.problems] == ["method", "dataset"]
    assert "prompt, chosen, rejected" in str(caught.value.problems[0])
    with acting_as(Person("someone-else")), pytest.raises(ValueError, match="no decided blind vote"):
        export_votes(studio, BASE, "not-mine", UNPAIRED)  # the votes above are the local owner's, not theirs


def test_an_adapter_a_queued_job_continues_from_cannot_be_deleted(studio):
    from jobs.training.registry import AdapterError, delete_adapter

    _adapters(studio, "first")
    _round(studio, ["first", "base"], best="first")
    export_votes(studio, BASE, "prefs")
    submit_job(studio, {"method": "dpo", "dataset": "prefs", "init_adapter": "first", "max_steps": 2,
                        "eval_fraction": 0})
    with pytest.raises(AdapterError, match="continues from 'first'"):
        delete_adapter(studio, "first")
