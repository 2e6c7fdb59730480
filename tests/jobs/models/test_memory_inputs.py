"""What a GRPO run holds in memory, from its settings: answers per prompt times their length, and a reference only
with a KL beta, a second copy of the base for a reward model (pure arithmetic, no model)."""

import pytest

from jobs.models.memory import estimate, generation_bytes
from jobs.models.memory_inputs import CPU, ModelShape, TrainShape
from jobs.run_settings.settings import Base, Machine, resolve
from jobs.spec import parse_spec

SMOLLM2 = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied_embeddings=True)
PLANNED = {"method": "grpo", "batch_size": 2, "num_epochs": 1, "learning_rate": 1e-4, "eval_fraction": 0}


def _shape(**fields) -> TrainShape:
    settings = resolve(parse_spec({**PLANNED, **fields}), Base(hidden=576), Machine("cpu", bf16=False))
    return TrainShape.from_settings(settings, longest_sequence=60)


def test_grpo_sizes_answers_per_prompt_times_their_length():
    shape = _shape(num_generations=4, max_completion_length=100, grad_accum=2)
    assert shape.batch_size == 8 and shape.sequence_length == 160 and not shape.packing
    assert shape.generation_sequences == 16  # the whole generation batch is sampled at once
    assert generation_bytes(SMOLLM2, shape, CPU) >= 2 * 30 * 192 * 16 * 160 * 4
    two, eight = (estimate(SMOLLM2, _shape(num_generations=g)) for g in (2, 8))
    assert eight.dynamic["activations"] == pytest.approx(4 * two.dynamic["activations"], rel=0.01)
    assert eight.peak > two.peak
    assert _shape(max_completion_length=1000).sequence_length == 512  # prompt and answer fit in max_length


def test_a_reference_only_with_a_kl_beta():
    without, with_kl = estimate(SMOLLM2, _shape(grpo_beta=0)), estimate(SMOLLM2, _shape(grpo_beta=0.04))
    assert without.static["reference_adapter"] == 0 < with_kl.static["reference_adapter"]
    assert _shape(grpo_beta=0.04).preference and not _shape(grpo_beta=0).preference


def test_a_reward_model_counts_a_second_copy_of_the_base():
    """GRPO's reward_model reward: the reward adapter on a second copy of the base, quantized as the run's, resident
    through the run (and at the end of loading), and its no-grad scoring pass among the transients."""
    plain = _shape(grpo_rewards="json")
    scored = _shape(grpo_rewards="json, reward_model", grpo_reward_adapter="rm")
    assert scored.reward_model and not plain.reward_model
    without, with_rm = estimate(SMOLLM2, plain), estimate(SMOLLM2, scored)
    copy = with_rm.static["reward_model"]
    assert "reward_model" not in without.static
    assert copy >= without.static["quantized_weights"] + without.static["unquantized_weights"]
    assert with_rm.train_peak - without.train_peak >= copy
    assert with_rm.load_peak == without.load_peak + copy
