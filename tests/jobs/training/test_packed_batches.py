"""What a packed SFT run feeds the model: each padding-free batch padded to a fixed token multiple (so matmul shapes
repeat from step to step), without changing the loss; and in bf16 a quantized base's embeddings and norms kept in
bf16, so the activations between its 4-bit matmuls are bf16 too (issue 34: both measured in docs/benchmarks.md).
Real NF4 on the demo model, on CPU."""

import dataclasses

import pytest
import torch

from jobs.data.formats import parse_file
from jobs.data.store import store_parsed
from jobs.run_settings.settings import PACKED_TOKEN_MULTIPLE
from jobs.spec import parse_spec
from jobs.studio import EXAMPLE_DATASET_FILE
from jobs.training.train import prepare_run

pytestmark = pytest.mark.slow
PACKED = {"max_steps": 1, "batch_size": 2, "max_length": 100, "packing": True, "eval_fraction": 0,
          "sample_prompts": 0, "lora_dropout": 0.0, "target_modules": "attention", "save_steps": 100}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path_factory.mktemp("data"))
    return path


def test_packed_batches_pad_to_the_token_multiple_and_the_pads_change_no_loss(dataset, demo_model_dir, tmp_path):
    run = prepare_run(parse_spec({**PACKED, "compute_dtype": "float32"}), tmp_path, str(demo_model_dir), dataset,
                      lambda *a: None, lambda: False)
    collator = run.trainer.data_collator
    assert collator.padding_free and collator.pad_to_multiple_of == PACKED_TOKEN_MULTIPLE
    unpadded = dataclasses.replace(collator, pad_to_multiple_of=None)
    rows = [run.trainer.train_dataset[i] for i in range(2)]
    padded_batch, plain_batch = collator(rows), unpadded(rows)
    width, real = padded_batch["input_ids"].shape[1], plain_batch["input_ids"].shape[1]
    assert width % PACKED_TOKEN_MULTIPLE == 0 and real < width < real + PACKED_TOKEN_MULTIPLE  # 2 rows of <= 100
    assert (padded_batch["labels"][0, real:] == -100).all()  # the pads train nothing
    model = run.trainer.model.eval()
    with torch.no_grad():
        padded_loss = model(**padded_batch).loss
        plain_loss = model(**plain_batch).loss
    assert torch.isfinite(plain_loss) and torch.allclose(padded_loss, plain_loss, rtol=1e-5), (padded_loss, plain_loss)


@pytest.mark.parametrize(("dtype", "kept"), [("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_a_bf16_run_keeps_the_bases_unquantized_weights_in_bf16(dtype, kept, dataset, demo_model_dir, tmp_path):
    """peft's preparation casts the embeddings and norms to fp32; a bf16 run casts them back (the QLoRA recipe's fp32
    norms stay for fp16, whose range needs them), and the step trains."""
    run = prepare_run(parse_spec({**PACKED, "compute_dtype": dtype}), tmp_path, str(demo_model_dir), dataset,
                      lambda *a: None, lambda: False)
    assert run.settings.upcasts_unquantized == (dtype != "bfloat16")
    model = run.trainer.model
    frozen = {name: p.dtype for name, p in model.named_parameters()
              if not p.requires_grad and p.dtype.is_floating_point and p.__class__.__name__ != "Params4bit"}
    assert frozen and set(frozen.values()) == {kept}, frozen  # embeddings, norms: none left in another dtype
    assert any("norm" in name for name in frozen) and any("embed" in name for name in frozen)
    hidden = model(**run.trainer.data_collator([run.trainer.train_dataset[0]]), output_hidden_states=True)
    assert hidden.hidden_states[-1].dtype == kept  # the residual stream follows
    result = run.trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
