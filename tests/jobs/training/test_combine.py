"""Combine adapters end to end: two adapters trained on the demo model (rank 8; all linear layers, and attention
only), combined by queued jobs of the live studio (linear, then TIES), registered like trained ones. Each combined
adapter loads with plain PEFT, holds exactly the weights PEFT's own `add_weighted_adapter` makes from the same
parents, and answers in the chat engine."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from jobs.chat.engine import ChatEngine
from jobs.chat.request import BaseVariant, GenerationSettings, resolve_panes, variant_of
from jobs.chat.scheduler import GenerationScheduler
from jobs.submit import submit_combine
from jobs.training.registry import rename_adapter
from storage import catalog, jobs_repo

pytestmark = pytest.mark.slow
BASE = "demo-tiny-llama"


def _register(live, two_adapters) -> list[str]:
    """The session's two trained LoRA adapters (tests/conftest.py) as adapters of the live studio."""
    import shutil

    from storage.models import Adapter

    names = []
    for index, folder in enumerate(two_adapters, start=1):
        name = f"combine-parent-{index}"
        shutil.copytree(folder, live.studio.absolute(f"adapters/{name}"))
        with live.studio.db.write() as session:
            session.add(Adapter(name=name, base_model=BASE, path=f"adapters/{name}", size_bytes=1, owner="local"))
        names.append(name)
    return names


def _peft_reference(demo_model_dir, folders, weights, **arguments) -> dict[str, torch.Tensor]:
    """PEFT's own combination of the same parents, as a state dict named as saved."""
    from peft import get_peft_model_state_dict

    base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folders[0]), adapter_name="p0")
    model.load_adapter(str(folders[1]), adapter_name="p1")
    torch.manual_seed(0)
    model.add_weighted_adapter(["p0", "p1"], weights, "mix", **arguments)
    return get_peft_model_state_dict(model, adapter_name="mix", save_embedding_layers=False)


def test_combined_adapters_equal_peft_and_answer_in_chat(live, demo_model_dir, two_adapters):
    studio = live.studio
    parents = _register(live, two_adapters)
    with studio.db.read() as session:
        folders = [studio.absolute(catalog.get_adapter_by_name(session, name).path) for name in parents]
    methods = {"mixed-linear": ("linear", [0.7, 0.5], {}),
               "mixed-ties": ("ties", [1.0, 1.0], {"density": 0.5, "majority_sign_method": "total"})}
    for name, (kind, weights, arguments) in methods.items():
        job_id = submit_combine(studio, name, parents, weights, kind, **arguments)
        job = live.wait_for(job_id)
        assert job.status == "succeeded", f"{job.error}\n{live.worker_log()}"
        assert job.step == job.total_steps == 4  # progress: load base, load parents, combine, save
        with studio.db.read() as session:
            adapter = catalog.adapter_for_job(session, job_id)
            provenance = jobs_repo.get_job(session, job_id).provenance
        assert adapter.name == name and adapter.base_model == BASE
        recorded = [(p["adapter"], p["weight"]) for p in provenance["combined_from"]]
        assert recorded == list(zip(parents, weights, strict=True))
        assert provenance["method"]["combination_type"] == kind
        folder = studio.absolute(adapter.path)
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "combination.json",
                "provenance.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
        assert "combined-adapter" in (folder / "README.md").read_text()
        assert not any(p.name.endswith(".partial") for p in folder.parent.iterdir())

        # It is PEFT's own result, and it loads with plain PEFT.
        got = load_file(folder / "adapter_model.safetensors")
        expected = _peft_reference(demo_model_dir, folders, weights, combination_type=kind, **arguments)
        assert got.keys() == expected.keys() and len(got) > 0
        for key, tensor in expected.items():
            assert torch.equal(got[key], tensor), key
        assert any(tensor.abs().sum() > 0 for key, tensor in got.items() if "lora_B" in key)
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_model_dir), str(folder))
        assert loaded.peft_config["default"].r == 8 and json.loads(
            (folder / "adapter_config.json").read_text())["use_rslora"] is False

    # It chats like a trained adapter, beside its parents, through the engine every chat uses.
    engine = GenerationScheduler(ChatEngine(studio.settings.models_dir))
    panes = resolve_panes(studio, BASE, ["mixed-linear", "mixed-ties", parents[0]])
    replies = engine.compare(BASE, panes, [[{"role": "user", "content": "What is 2 plus 3?"}]] * 3,
                             GenerationSettings(max_new_tokens=8, temperature=0))
    assert len(replies) == 3 and all(isinstance(reply, str) for reply in replies)

    # A rename rewrites its card as a combined adapter's, not a trained one's.
    rename_adapter(studio, "mixed-ties", "mixed-ties-2")
    with studio.db.read() as session:
        folder = studio.absolute(catalog.get_adapter_by_name(session, "mixed-ties-2").path)
    assert "# mixed-ties-2" in (folder / "README.md").read_text()


def test_a_cancel_or_a_failure_leaves_nothing_half_written(demo_model_dir, tmp_path):
    """Stopped between steps (a cancel), or failing on a parent that is not there: no folder, no partial one."""
    from jobs.spec import CombinedParent, CombineSpec
    from jobs.training.combine import CombineStopped, ParentFolder, combine_adapters

    spec = CombineSpec(name="mix", base_model=BASE, combination_type="linear",
                       parents=[CombinedParent(adapter=n, adapter_id=i, weight=1.0) for i, n in enumerate("ab")])
    parents = [ParentFolder(name, tmp_path / "missing" / name, 1.0) for name in "ab"]
    out = tmp_path / "out" / "combined"
    out.parent.mkdir()
    steps = []
    with pytest.raises(CombineStopped):
        combine_adapters(str(demo_model_dir), parents, spec, out, steps.append, lambda: True)
    assert steps == [1] and list(out.parent.iterdir()) == []
    with pytest.raises(Exception) as failed:
        combine_adapters(str(demo_model_dir), parents, spec, out)
    assert "missing" in str(failed.value) and list(out.parent.iterdir()) == []


def test_cat_of_rslora_parents_is_their_weighted_sum(demo_model_dir, tmp_path):
    """cat is exact: each module's weight change (B·A times its scaling) is the weighted sum of its parents', also for
    rsLoRA parents (scaled alpha/sqrt(r)), whose flag PEFT would otherwise copy onto the result and scale it again.
    Parents of different ranks and targets: PEFT's random init (B not zero), not trained."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoTokenizer

    from jobs.spec import CombinedParent, CombineSpec
    from jobs.training.combine import ParentFolder, combine_adapters

    folders, weights = [], [0.8, -0.5]
    for index, (rank, targets) in enumerate(((4, ["q_proj", "v_proj"]), (8, ["q_proj", "o_proj"]))):
        torch.manual_seed(index)
        base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
        config = LoraConfig(r=rank, lora_alpha=16, target_modules=targets, use_rslora=True, init_lora_weights=False,
                            task_type="CAUSAL_LM")
        folders.append(tmp_path / f"p{index}")
        get_peft_model(base, config).save_pretrained(folders[-1])
        AutoTokenizer.from_pretrained(demo_model_dir).save_pretrained(folders[-1])
        (folders[-1] / "training_spec.json").write_text(json.dumps(
            {"quantization": "none" if index == 0 else "nf4", "double_quant": False, "compute_dtype": "float32"}))
    spec = CombineSpec(name="cat", base_model=BASE, combination_type="cat",
                       parents=[CombinedParent(adapter=f"p{i}", adapter_id=i, weight=w) for i, w in enumerate(weights)])
    parents = [ParentFolder(f"p{i}", folder, weight)
               for i, (folder, weight) in enumerate(zip(folders, weights, strict=True))]
    out = combine_adapters(str(demo_model_dir), parents, spec, tmp_path / "out")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 12
    # Chat loads its base as the first parent trained (they differ, and the record says so).
    assert variant_of(out, "cat") == BaseVariant("none", False, "float32")
    assert "different bases" in json.loads((out / "combination.json").read_text())["chat_base"]["note"]

    base = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out), adapter_name="combined")
    for parent in parents:
        model.load_adapter(str(parent.folder), adapter_name=parent.name)
    layers = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()
              if isinstance(module, LoraLayer)}
    assert set(layers) == {"q_proj", "v_proj", "o_proj"}  # the union of the parents' targets
    for module in model.modules():
        if isinstance(module, LoraLayer):
            expected = sum(p.weight * module.get_delta_weight(p.name) for p in parents if p.name in module.lora_A)
            assert torch.allclose(module.get_delta_weight("combined"), expected, atol=1e-6)

    # It merges into its base like a trained adapter; the merged card says what it was made of.
    from jobs.training.merge import merge_adapter

    merged = merge_adapter(str(demo_model_dir), out, tmp_path / "merged", "float32")
    assert "combined by the fine-tuning studio (rank 12, cat of `p0` ×0.8, `p1` ×-0.5)" in (
        merged / "README.md").read_text()
    assert (merged / "combination.json").is_file() and (merged / "model.safetensors").is_file()
