"""The base a chat pane loads comes from its adapter's training_spec.json read as today's version: one written before
versions existed, or one today's rules refuse for another field, still names how its base was loaded."""

import json
from pathlib import Path

import pytest
import torch

from jobs.chat.request import BaseVariant, ChatRequestError, variant_of

V1 = json.loads((Path(__file__).parents[1] / "fixtures" / "specs_v1.json").read_text())


@pytest.mark.parametrize(("stored", "variant"), [
    (V1["every_variant"], BaseVariant("int8", False, "float32")),
    ({**V1["every_variant"], "lora_r": 0}, BaseVariant("int8", False, "float32")),
    (V1["defaults"], BaseVariant()),
])
def test_a_pane_loads_the_base_its_stored_spec_names(tmp_path, stored, variant):
    (tmp_path / "training_spec.json").write_text(json.dumps(stored))
    assert variant_of(tmp_path, "mine") == variant


def test_an_unreadable_spec_is_refused_naming_the_pane(tmp_path):
    (tmp_path / "training_spec.json").write_text("{torn")
    with pytest.raises(ChatRequestError, match="adapters: 'mine': training_spec.json is unreadable"):
        variant_of(tmp_path, "mine")


def test_an_adapter_trained_with_rope_scaling_gets_its_base_loaded_with_it(tmp_path, demo_model_dir):
    """Its positions were learned against the stretched rotary frequencies: chat loads the base the same way."""
    from jobs.models.loading import load_base_model

    stored = {"rope_scaling": "linear", "rope_factor": 2.0, "max_length": 2048}
    (tmp_path / "training_spec.json").write_text(json.dumps(stored))
    variant = variant_of(tmp_path, "long")
    assert variant == BaseVariant(rope_scaling="linear", rope_factor=2.0) and "RoPE linear x2" in variant.label
    model = load_base_model(variant.spec(str(demo_model_dir)), str(demo_model_dir), "cpu", torch.float32)
    assert model.config.rope_parameters["factor"] == 2.0
    assert model.model.rotary_emb.inv_freq[0].item() == pytest.approx(0.5)


@pytest.mark.parametrize(("recorded", "variant"), [
    ({"quantization": "none", "double_quant": False, "compute_dtype": "float32"},
     BaseVariant("none", False, "float32")),
    ({"rope_scaling": "linear", "rope_factor": 2}, BaseVariant(rope_scaling="linear", rope_factor=2.0)),
    # An adapter folder is a person's upload too: what chat cannot use falls back to the defaults, field by field.
    ({"quantization": ["nf4"], "double_quant": "yes", "rope_scaling": "linear"}, BaseVariant()),
    ({"rope_scaling": "linear", "rope_factor": -3}, BaseVariant()),
    ("nf4", BaseVariant()),
])
def test_a_combined_adapter_loads_the_base_its_parents_trained_on(tmp_path, recorded, variant):
    (tmp_path / "combination.json").write_text(json.dumps({"chat_base": {"variant": recorded}}))
    assert variant_of(tmp_path, "mixed") == variant


def test_a_combined_adapter_recording_an_unloadable_base_is_refused_naming_the_pane(tmp_path):
    (tmp_path / "combination.json").write_text(json.dumps({"chat_base": {"variant": {"quantization": "int3"}}}))
    with pytest.raises(ChatRequestError, match="adapters: 'mixed' was trained on a base loaded as 'int3'"):
        variant_of(tmp_path, "mixed")
