"""The preference bench's built data is what ORPO and KTO read, and its voting rule decides as a person would for
the extraction task (the JSON answer best; nothing parsing nor stating a fact all bad; equal answers a tie)."""

import json

from bench.preference_methods import built_sets, verdict_of
from jobs.data.formats import PREFERENCE, UNPAIRED, parse_records

REFERENCE = json.dumps({"name": "Grace Kim", "age": 71, "city": "Beirut"})


def test_the_built_pairs_and_their_unpaired_form_parse_as_the_formats_orpo_and_kto_read():
    pairs, unpaired = built_sets([{"prompt": "Extract: Grace Kim, aged 71, lives in Beirut.", "reference": REFERENCE}])
    assert parse_records(pairs).format == PREFERENCE and parse_records(unpaired).format == UNPAIRED
    assert [row["label"] for row in unpaired] == [True, False]
    assert unpaired[0]["completion"] == pairs[0]["chosen"] and unpaired[1]["completion"] == pairs[0]["rejected"]


def test_the_vote_prefers_json_then_more_facts_and_says_all_bad_or_tie_when_nothing_separates_the_answers():
    prose = "Grace Kim is 71 and lives in Beirut."
    assert verdict_of([prose, REFERENCE], REFERENCE).best == 1
    assert verdict_of(["Grace Kim is 71.", prose], REFERENCE).best == 1
    assert verdict_of(["no idea", "hello"], REFERENCE).outcome == "all_bad"
    assert verdict_of([prose, prose], REFERENCE).outcome == "tie"
