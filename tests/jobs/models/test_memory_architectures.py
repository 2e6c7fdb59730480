"""The memory estimate for every family the studio trains, from a tiny random model of each (bench/tiny_models.py:
Llama, Qwen2, Mistral, Phi-3, Gemma 2), and for every method and variant: each gets an estimate, and the estimate
has the parts that method or variant adds, sized from the model's own modules. Pure arithmetic on the headers, except
one real run (the fastest new kind: a tiny Phi-3 trained with DPO), measured as the worker's child measures it.
bench/memory_estimate.py measures every row; docs/benchmarks.md has the table."""

import json

import pytest

from bench.tiny_models import ARCHITECTURES, build_tiny
from jobs.models.fits import job_estimate
from jobs.models.memory_inputs import CPU, ModelShape
from jobs.run_settings.settings import Machine
from jobs.spec import parse_spec

BASE = {"batch_size": 4, "max_length": 512}
CPU_FP32 = Machine("cpu", bf16=False)  # the CPU profile: fp32 compute
GPU = Machine("cuda", bf16=True)
VARIANTS = {"lora": {}, "dora": {"use_dora": True}, "modules_to_save": {"modules_to_save": ["lm_head"]},
            "embeddings": {"target_modules": ["embed_tokens"]}, "dpo": {"method": "dpo"}}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny(arch, folder / arch) for arch in ARCHITECTURES}


def _estimate(shape: ModelShape, device=CPU_FP32, longest: int = 0, **fields):
    return job_estimate(parse_spec({**BASE, **fields}), shape, device, longest)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_config_alone_gives_the_shape_the_headers_give(arch, tiny_models):
    folder = tiny_models[arch]
    from_headers = ModelShape.from_dir(folder)
    from_config = ModelShape.from_config(json.loads((folder / "config.json").read_text()))
    assert from_config.linear_shapes() == from_headers.linear_shapes()
    assert from_config.total_params == from_headers.total_params == from_headers.checkpoint_bytes // 4
    assert from_config.layer_norms == from_headers.layer_norms == (4 if arch == "gemma2" else 2)


def test_each_family_is_read_with_its_own_modules(tiny_models):
    shapes = {arch: ModelShape.from_dir(folder) for arch, folder in tiny_models.items()}
    assert set(shapes["phi3"].linear_shapes()) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert shapes["phi3"].linear_shapes()["qkv_proj"] == (256, 256 + 2 * 128)  # q and two grouped k/v, fused
    assert {m.name for m in shapes["qwen2"].decoder_linears if m.bias} == {"q_proj", "k_proj", "v_proj"}
    assert shapes["gemma2"].eager_attention and shapes["gemma2"].mask_kinds == 2  # soft-capped; full + sliding
    assert not any(shapes[arch].eager_attention for arch in ("llama", "qwen2", "mistral", "phi3"))
    # all-linear adapts every Linear of the family: the same parameters, however they are fused
    lora = {arch: _estimate(shape).static["lora_params"] for arch, shape in shapes.items()}
    assert lora["phi3"] < lora["llama"] == lora["mistral"] == lora["qwen2"] == lora["gemma2"]
    assert "attention_scores" in _estimate(shapes["gemma2"]).dynamic


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gets_an_estimate_with_its_parts(arch, variant, tiny_models):
    shape = ModelShape.from_dir(tiny_models[arch])
    lora = _estimate(shape)
    found = _estimate(shape, longest=150, **VARIANTS[variant])
    r, hidden, vocab, bytes_ = 8, shape.hidden, shape.vocab, CPU.lora_bytes
    assert found.peak > CPU.framework_bytes and _estimate(shape, GPU, **VARIANTS[variant]).peak > 0
    if variant == "dora":  # a magnitude per output of every adapted Linear, and two saved outputs each
        magnitudes = sum(m.layers * m.d_out for m in shape.decoder_linears)
        assert found.static["lora_params"] - lora.static["lora_params"] == magnitudes * bytes_
        assert found.dynamic["activations"] > lora.dynamic["activations"]
    elif variant == "modules_to_save":  # a trainable copy of the head, its gradient, two AdamW states
        assert found.static["saved_modules"] == 2 * vocab * hidden * bytes_
        assert found.static["optimizer_states"] - lora.static["optimizer_states"] == 2 * vocab * hidden * bytes_
    elif variant == "embeddings":  # r x vocab and hidden x r, and no Linear's input to keep
        assert found.static["lora_params"] == r * (vocab + hidden) * bytes_
        assert found.dynamic["activations"] < lora.dynamic["activations"]
    elif variant == "dpo":  # chosen + rejected per row, padded to the longest pair, and no second base
        assert "reference_pass" in found.dynamic or "lm_head_tiles" in found.dynamic
        assert found.static["quantized_weights"] == lora.static["quantized_weights"]
        assert found.dynamic["activations"] < lora.dynamic["activations"]  # 8 x 150 tokens against 4 x 512


def test_a_dpo_estimate_follows_the_pairs_not_max_length():
    """A DPO step is 2 x batch sequences padded to the longest pair of the batch, not max_length long (a DPO job of
    short pairs was estimated at 4 times its measured peak)."""
    from jobs.models.fits import KNOWN_SHAPES

    smollm2 = KNOWN_SHAPES["smollm2-135m-instruct"]
    spec = {"base_model": "smollm2-135m-instruct", "method": "dpo", "batch_size": 2, "max_length": 1024}
    short_pairs, unknown = _estimate(smollm2, longest=120, **spec), _estimate(smollm2, **spec)
    assert short_pairs.dynamic["activations"] * 1024 // 120 == pytest.approx(unknown.dynamic["activations"], rel=0.01)
    assert short_pairs.peak < unknown.peak / 2


def test_trained_biases_count_where_the_family_has_them(tiny_models):
    qwen2, llama = ModelShape.from_dir(tiny_models["qwen2"]), ModelShape.from_dir(tiny_models["llama"])
    biases = sum(m.layers * m.d_out for m in qwen2.decoder_linears if m.bias)
    assert (_estimate(qwen2, lora_bias="all").static["lora_grads"]
            - _estimate(qwen2).static["lora_grads"]) == biases * CPU.lora_bytes
    assert _estimate(llama, lora_bias="all").peak == _estimate(llama).peak  # a Llama has no biases


def test_a_phi3_job_is_checked_against_its_own_module_names(studio, tiny_models):
    from jobs.spec import SpecError
    from jobs.submit import validate_submission

    base = str(tiny_models["phi3"])
    assert validate_submission(studio, {"base_model": base, "target_modules": ["qkv_proj", "gate_up_proj"]})
    with pytest.raises(SpecError, match="q_proj.*qkv_proj"):
        validate_submission(studio, {"base_model": base, "target_modules": "attention"})


@pytest.mark.slow
def test_a_tiny_phi3_dpo_run_peaks_within_a_quarter_of_its_estimate(tiny_models, tmp_path):
    from bench.memory_estimate import Row, dataset, estimated, longest_sequence, measure

    row = Row("phi3 dpo", "phi3", {"method": "dpo", "batch_size": 2, "max_length": 256}, data="pairs")
    base = str(tiny_models["phi3"])
    measured = measure(row, base, dataset("pairs", tmp_path), tmp_path / "run", steps=2)
    assert measured["returncode"] == 0, measured.get("error")
    predicted = estimated(row, base, measured["dtype"], longest_sequence(base, "pairs"))["estimated_bytes"]
    assert abs(predicted - measured["measured_bytes"]) <= 0.25 * measured["measured_bytes"], (
        predicted / 2**20, measured["measured_bytes"] / 2**20)


def test_orpo_and_simpo_hold_no_reference_and_kto_one_like_dpo(tiny_models):
    """ORPO and SimPO: pairs like DPO, no reference (no reference pass, no frozen copy of a starting adapter), and
    full-vocabulary logits (TRL's experimental trainers do not fuse the LM head). KTO: one answer a row, and a
    reference like DPO's."""
    shape = ModelShape.from_dir(tiny_models["llama"])
    found = {method: _estimate(shape, longest=150, method=method, init_adapter="start")
             for method in ("dpo", "orpo", "simpo", "kto")}
    lora = found["dpo"].static["lora_params"]
    for method in ("orpo", "simpo"):
        assert found[method].static["reference_adapter"] == 0 and "reference_pass" not in found[method].dynamic
        pair_tokens = 2 * BASE["batch_size"] * 150
        assert found[method].dynamic["lm_head_tiles"] == 3 * pair_tokens * shape.vocab * 4
    for method in ("dpo", "kto"):
        assert found[method].static["reference_adapter"] == lora > 0
    assert found["kto"].dynamic["activations"] < found["dpo"].dynamic["activations"]  # 4 answers against 4 pairs
    assert found["orpo"].dynamic["activations"] == found["dpo"].dynamic["activations"]


def test_a_reward_model_is_sft_on_pairs_without_the_lm_head(tiny_models):
    """A reward model: each pair is two sequences, as DPO's, with no reference; its loss reads one score per
    sequence, so the LM head's tiles are gone and its peak is below SFT's on the same tokens."""
    shape = ModelShape.from_dir(tiny_models["llama"])
    reward, dpo = (_estimate(shape, longest=150, method=method) for method in ("reward", "dpo"))
    assert reward.dynamic["activations"] == dpo.dynamic["activations"]  # pairs: 2 x batch sequences
    assert "reference_pass" not in reward.dynamic and reward.static["reference_adapter"] == 0
    assert reward.dynamic.get("lm_head_tiles", 0) < dpo.dynamic.get("lm_head_tiles", 1)
    assert reward.peak < dpo.peak
