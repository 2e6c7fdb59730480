"""On a CPU, TRL's fused LM head scores only labelled positions once the studio's switch is on: the same loss and
gradients as TRL's own path over every position, with only the labelled rows reaching the head."""

import pytest
import torch
import trl.trainer.utils as trl_utils
from transformers import LlamaConfig, LlamaForCausalLM

from jobs.training import lm_head


@pytest.fixture
def restore_trl_decision():
    original = trl_utils._use_triton
    trl_utils._use_triton = lm_head._tiles_on_triton  # TRL's own, whatever ran in this process before
    yield
    trl_utils._use_triton = original


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def count_rows_reaching_the_head(monkeypatch) -> list[int]:
    """The number of rows the head projects, per call."""
    apply, rows = trl_utils._ChunkedLogProbFunction.apply, []

    def counting(hidden, *rest):
        rows.append(hidden.shape[0])
        return apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    return rows


def loss_and_grads(model, ids, labels) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return float(out.loss), grads


def test_labelled_positions_only_same_loss_and_gradients(monkeypatch, restore_trl_decision):
    model = tiny_model()
    ids = torch.randint(0, 512, (2, 24))
    labels = ids.clone()
    labels[:, :15] = -100  # a prompt: no loss on its tokens
    cpu = torch.device("cpu")
    assert not lm_head.scores_only_labelled_positions(cpu)  # TRL's own choice on a CPU: every position

    rows = count_rows_reaching_the_head(monkeypatch)
    loss_all, grads_all = loss_and_grads(model, ids, labels)
    lm_head.score_only_labelled_positions()
    lm_head.score_only_labelled_positions()  # twice is harmless
    assert lm_head.scores_only_labelled_positions(cpu)
    loss_compact, grads_compact = loss_and_grads(model, ids, labels)

    assert rows == [2 * 23, 2 * 9]  # every next-token position, then only the labelled ones
    assert loss_compact == pytest.approx(loss_all, rel=1e-5)
    assert len(grads_all) == len(grads_compact) > 0
    for a, b in zip(grads_all, grads_compact, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_batch_without_labels_gives_a_zero_loss_that_backpropagates(restore_trl_decision):
    model = tiny_model()
    lm_head.score_only_labelled_positions()
    ids = torch.randint(0, 512, (1, 12))
    out = model(input_ids=ids, labels=torch.full_like(ids, -100), fused_lm_head=True)
    out.loss.backward()  # a packed eval batch of prompts only must not crash the run
    assert float(out.loss) == 0.0
