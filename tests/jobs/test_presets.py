"""Presets: saved, listed, loaded, shared as JSON or YAML; every bad field named; names never paths; each person's
own, shared with everyone only by an admin; preset files of earlier versions adopted."""

import json

import pytest

from jobs.presets import (
    PresetError,
    adopt_preset_files,
    delete_preset,
    export_preset,
    load_preset,
    parse_preset,
    preset_names,
    save_preset,
    share_preset,
)
from jobs.spec import SPEC_VERSION
from storage.access import Person, acting_as

ALICE, BOB, ROOT = Person("alice"), Person("bob"), Person("root", admin=True)


def test_save_list_load(studio):
    save_preset(studio, "small-r", {"lora_r": 4, "target_modules": ["q_proj", "v_proj"], "use_dora": True})
    assert preset_names(studio) == ["small-r"]
    assert load_preset(studio, "small-r") == {"lora_r": 4, "target_modules": ["q_proj", "v_proj"], "use_dora": True}
    save_preset(studio, "small-r", {"lora_r": 8})  # saving again replaces it
    assert load_preset(studio, "small-r") == {"lora_r": 8}
    save_preset(studio, "reward-model", {"method": "reward", "lora_r": 4})  # a method like any field
    assert load_preset(studio, "reward-model") == {"method": "reward", "lora_r": 4}


def test_yaml_and_json_read_the_same():
    text = "lora_r: 16\nlearning_rate: 0.0002\noptimizer: paged_adamw_8bit\n"
    assert parse_preset(text, ".yaml") == parse_preset('{"lora_r": 16, "learning_rate": 2e-4, '
                                                       '"optimizer": "paged_adamw_8bit"}', ".json")


@pytest.mark.parametrize(("text", "suffix", "words"), [
    ('{"lora_r": 0, "optimizer": "sgd"}', ".json", ["lora_r: must be", "optimizer: Input should be"]),
    ('{"lora_rank": 8}', ".json", ["lora_rank: is not a spec field"]),
    ("[1, 2]", ".yaml", ["file: a preset is a mapping"]),
    ("lora_r: [", ".yaml", ["file: not valid YAML"]),
    ("method: reward\nmodules_to_save: [lm_head]\n", ".yaml", ["modules_to_save: method reward has no lm_head"]),
])
def test_every_problem_is_named(text, suffix, words):
    with pytest.raises(PresetError) as caught:
        parse_preset(text, suffix)
    for word in words:
        assert any(word in problem for problem in caught.value.problems), caught.value.problems


def test_a_preset_name_is_never_a_path(studio):
    for name in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(PresetError, match="name"):
            save_preset(studio, name, {"lora_r": 4})
    with pytest.raises(PresetError, match="no preset named"):
        load_preset(studio, "../../etc/passwd")


def test_presets_belong_to_their_owner_until_an_admin_shares_one(studio):
    with acting_as(ALICE):
        save_preset(studio, "mine", {"lora_r": 4})
    with acting_as(BOB):
        assert preset_names(studio) == []  # not listed...
        for ref in ("mine", "alice/mine"):  # ...nor loaded, exported, deleted or shared by name
            for call in (load_preset, export_preset, delete_preset):
                with pytest.raises(PresetError, match="no preset named"):
                    call(studio, ref)
        with pytest.raises(PresetError, match="only an admin shares"):
            share_preset(studio, "alice/mine", True)
        save_preset(studio, "mine", {"lora_r": 64})  # his own of the same name overwrites nothing of hers
    with acting_as(ALICE):
        assert load_preset(studio, "mine") == {"lora_r": 4}
    with acting_as(ROOT):
        assert sorted(preset_names(studio)) == ["alice/mine", "bob/mine"]
        share_preset(studio, "alice/mine", True)
    with acting_as(BOB):
        assert preset_names(studio) == ["alice/mine", "mine"]
        assert load_preset(studio, "alice/mine") == {"lora_r": 4}
        with pytest.raises(PresetError, match="only they or an admin may delete it"):
            delete_preset(studio, "alice/mine")
        path = export_preset(studio, "alice/mine")  # a download lands in Bob's own exports folder
        assert path.relative_to(studio.settings.exports_dir).parts[0] == "bob"
        assert json.loads(path.read_text()) == {"spec_version": SPEC_VERSION, "lora_r": 4}  # read back migrated
    with acting_as(ALICE):
        delete_preset(studio, "mine")
        assert preset_names(studio) == []


def test_preset_files_of_an_earlier_version_become_the_local_persons(studio):
    folder = studio.settings.data_dir / "presets"
    folder.mkdir()
    (folder / "old.json").write_text('{"lora_r": 32}')
    (folder / "broken.json").write_text("{")
    assert adopt_preset_files(studio) == 1
    assert preset_names(studio) == ["old"] and load_preset(studio, "old") == {"lora_r": 32}
    assert not folder.exists() and (studio.settings.data_dir / "presets.adopted" / "broken.json").exists()
    assert adopt_preset_files(studio) == 0
