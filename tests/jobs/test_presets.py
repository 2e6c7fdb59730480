"""Presets: saved, listed, loaded, shared as JSON or YAML; every bad field named; names never paths."""

import pytest

from jobs.presets import PresetError, load_preset, parse_preset, preset_names, save_preset


def test_save_list_load(tmp_path):
    save_preset(tmp_path, "small-r", {"lora_r": 4, "target_modules": ["q_proj", "v_proj"], "use_dora": True})
    assert preset_names(tmp_path) == ["small-r"]
    assert load_preset(tmp_path, "small-r") == {"lora_r": 4, "target_modules": ["q_proj", "v_proj"], "use_dora": True}


def test_yaml_and_json_read_the_same():
    text = "lora_r: 16\nlearning_rate: 0.0002\noptimizer: paged_adamw_8bit\n"
    assert parse_preset(text, ".yaml") == parse_preset('{"lora_r": 16, "learning_rate": 2e-4, '
                                                       '"optimizer": "paged_adamw_8bit"}', ".json")


@pytest.mark.parametrize(("text", "suffix", "words"), [
    ('{"lora_r": 0, "optimizer": "sgd"}', ".json", ["lora_r: must be", "optimizer: Input should be"]),
    ('{"lora_rank": 8}', ".json", ["lora_rank: is not a spec field"]),
    ("[1, 2]", ".yaml", ["file: a preset is a mapping"]),
    ("lora_r: [", ".yaml", ["file: not valid YAML"]),
])
def test_every_problem_is_named(text, suffix, words):
    with pytest.raises(PresetError) as caught:
        parse_preset(text, suffix)
    for word in words:
        assert any(word in problem for problem in caught.value.problems), caught.value.problems


def test_a_preset_name_is_never_a_path(tmp_path):
    for name in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(PresetError, match="name"):
            save_preset(tmp_path, name, {"lora_r": 4})
    with pytest.raises(PresetError, match="no preset named"):
        load_preset(tmp_path, "../../etc/passwd")
