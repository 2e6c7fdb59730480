"""Every adapter variant in one compare: LoRA, DoRA (which peft cannot mix into an adapter_names batch), rsLoRA with
another rank and target set and lm_head trained in full (which broke peft's mixed batches for the other adapters),
and an adapter trained on an fp4 base (its checkpoint too) beside the base: every pane streams and equals that
adapter alone, and blind votes and prompt suites run over the same panes. Then device memory: a base waits for what a
training job holds, and what could never fit is refused in words."""

import shutil
from dataclasses import asdict

import pytest
import torch

from jobs.chat.engine import ChatEngine, resident_estimate
from jobs.chat.request import (
    BaseVariant,
    ChatRequestError,
    GenerationSettings,
    Replies,
    conversation,
    resolve_panes,
)
from jobs.chat.scheduler import GenerationLimits, GenerationScheduler

pytestmark = pytest.mark.slow
DEMO = "demo-tiny-llama"
GREEDY = GenerationSettings(max_new_tokens=8)
PROMPT = "What is 2 plus 3?"


def _register(studio, name: str, run_dir):
    """An adapter row for a run trained by the fixtures, with the run's kept checkpoints where the studio keeps
    them."""
    from storage import jobs_repo
    from storage.models import Adapter

    shutil.copytree(run_dir / "adapter", studio.absolute(f"adapters/{name}"))
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=name, spec={})
        session.add(Adapter(name=name, base_model=DEMO, path=f"adapters/{name}", size_bytes=1, job_id=job.id))
        job_id = job.id
    if (run_dir / "checkpoints").is_dir():
        shutil.copytree(run_dir / "checkpoints", studio.run_dir(job_id) / "checkpoints")


def _alone(demo_model_dir, variant: BaseVariant, adapter_dir, prompt: str) -> str:
    """Greedy reply of one adapter on its own base, loaded directly: no engine, no batch, no adapter_names."""
    from peft import PeftModel

    from jobs.models.loading import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(str(demo_model_dir))
    model = load_base_model(variant.spec(DEMO), str(demo_model_dir), "cpu", torch.float32).eval()
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    text = tokenizer.apply_chat_template(conversation(prompt), add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_every_variant_streams_in_one_compare_a_blind_round_and_a_suite(studio, demo_model_dir, two_adapters,
                                                                         variant_adapters, tmp_path):
    from jobs.chat.suites import parse_suite_text, run_suite, save_suite, suite_grid
    from jobs.chat.votes import Verdict, record_vote, shuffled
    from storage import votes_repo

    shutil.copytree(two_adapters[0].parent, tmp_path / "lora-run")  # the fixtures' LoRA, as a run folder
    _register(studio, "lora", tmp_path / "lora-run")
    for name, run_dir in variant_adapters.items():
        _register(studio, name, run_dir)
    names = ["base", "lora", "dora", "rslora", "fp4", "fp4@step-2"]
    panes = resolve_panes(studio, DEMO, names)
    fp4 = BaseVariant(quantization="fp4", double_quant=False)
    assert [p.variant for p in panes] == [BaseVariant()] * 4 + [fp4] * 2  # a checkpoint follows its adapter
    scheduler = GenerationScheduler(ChatEngine(studio.settings.models_dir), GenerationLimits(slice_tokens=2))

    updates = list(scheduler.stream(DEMO, panes, [conversation(PROMPT)] * len(panes), GREEDY))
    final = updates[-1]
    assert all(final) and len(set(final)) > 2, final  # every pane answers, and they differ
    assert any(all(n > 0 for n in u.token_counts) and sum(u.token_counts) < sum(final.token_counts)
               for u in updates), "some pane stayed empty until others had finished"
    engine = scheduler.engine
    assert engine.loaded() == [DEMO, f"{DEMO} (fp4)"]  # each variant once: nf4 (base, LoRA, DoRA, rsLoRA) and fp4
    fp4_model = engine._bases[next(k for k in engine._bases if "fp4" in k)].model
    assert {getattr(m.weight, "quant_type", None) for m in fp4_model.modules() if hasattr(m, "weight")} >= {"fp4"}
    for pane, reply in zip(panes, final, strict=True):  # each pane equals that adapter (or the base) alone
        assert scheduler.compare(DEMO, [pane], [conversation(PROMPT)], GREEDY)[0] == reply, pane.name
    for name in ("lora", "dora", "rslora", "fp4"):  # and alone without the engine, on a base loaded as it trained
        pane = panes[names.index(name)]
        assert _alone(demo_model_dir, pane.variant, pane.adapter_dir, PROMPT) == final[names.index(name)], name

    # A blind round over the same panes, voted through the path the page uses.
    order = shuffled(names, seed=1)
    shown = [panes[names.index(n)] for n in order]
    replies = scheduler.compare(DEMO, shown, [conversation(PROMPT)] * len(shown), GREEDY)
    assert list(replies) == [final[names.index(n)] for n in order]
    vote = record_vote(studio, DEMO, conversation(PROMPT), [{"adapter": n, "reply": r} for n, r in
                                                             zip(order, replies, strict=True)],
                       Verdict("best", order.index("dora")), asdict(GREEDY))
    with studio.db.read() as session:
        assert [v.chosen for v in votes_repo.votes_for(session, DEMO)] == ["dora"] and vote.id

    # A prompt suite over the same panes: answers as in the compare, a reference scored for every pane.
    save_suite(studio, "variants", parse_suite_text(f"{PROMPT} => 5\n\nUppercase the word: lime\n"))
    assert run_suite(studio, scheduler, "variants", DEMO, panes, GREEDY) == 2 * len(panes)
    grid = suite_grid(studio, "variants", DEMO)
    assert [grid.replies[(0, n)] for n in names] == list(final)
    batched = [grid.logliks[(0, n)] for n in names]
    for pane, score in zip(panes, batched, strict=True):
        assert scheduler.reference_logliks(DEMO, [pane], conversation(PROMPT), "5")[0] == pytest.approx(score,
                                                                                                        abs=1e-5)
    assert len({round(s, 4) for s in batched}) > 2


def test_device_memory_waits_for_training_and_refuses_what_cannot_fit(demo_models, two_adapters, tmp_path,
                                                                      monkeypatch):
    import jobs.chat.engine as engine_module
    import jobs.chat.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "MEMORY_RETRY_S", 0.05)
    monkeypatch.setattr(scheduler_module, "WAIT_UPDATE_S", 0.05)
    need = resident_estimate(str(demo_models / DEMO), DEMO, "cpu")
    reading, held = [(need // 2, 100 * need)], [3 * need]

    def scheduler(wait_s: float = 30) -> GenerationScheduler:
        engine = ChatEngine(demo_models, device_memory=lambda device: reading[0], training_bytes=lambda: held[0])
        return GenerationScheduler(engine, GenerationLimits(memory_wait_s=wait_s))

    hello, short = [conversation("hi")], GenerationSettings(max_new_tokens=2)
    waiting = scheduler()
    stream = waiting.stream(DEMO, [("base", None)], hello, short)
    update = next(u for u in stream if u.note)
    gib = 2**30
    assert update.note == (f"waiting for {need / gib:.2f} GiB free to load {DEMO} ({need // 2 / gib:.2f} GiB free "
                           f"now); a training job on this host holds {3 * need / gib:.2f} GiB")
    assert isinstance(update, Replies) and update.token_counts == [0] and not waiting.engine.loaded()
    reading[0] = (10 * need, 100 * need)  # the training job ended
    assert list(stream)[-1].token_counts[0] > 0 and waiting.engine.loaded() == [DEMO]

    reading[0] = (need // 2, 100 * need)
    with pytest.raises(ChatRequestError, match=r"base_model: gave up after 0.2 s waiting for .* GiB free"):
        scheduler(wait_s=0.2).compare(DEMO, [("base", None)], hello, short)
    held[0] = 0  # nothing here will free it: refused at once
    with pytest.raises(ChatRequestError, match=r"needs about .* GiB loaded for chat and only .* GiB of this cpu's "):
        scheduler().compare(DEMO, [("base", None)], hello, short)
    reading[0] = (need // 2, need // 2)  # more than the device holds in all: never worth waiting for
    held[0] = 3 * need
    with pytest.raises(ChatRequestError, match=r"more than this cpu's .* GiB in all"):
        scheduler().compare(DEMO, [("base", None)], hello, short)

    # A variant this machine cannot load is refused naming its pane (bitsandbytes builds without a CPU int8 kernel
    # fail so; the one here runs int8 on a CPU, so the failure is simulated).
    int8 = tmp_path / "int8-adapter"
    shutil.copytree(two_adapters[0], int8)
    spec = (int8 / "training_spec.json").read_text().replace('"quantization": "nf4"', '"quantization": "int8"')
    (int8 / "training_spec.json").write_text(spec.replace('"double_quant": true', '"double_quant": false'))
    real_load = engine_module.load_base_model

    def load(spec, *args):
        if spec.quantization == "int8":
            raise RuntimeError("no int8 kernel for this CPU")
        return real_load(spec, *args)

    monkeypatch.setattr(engine_module, "load_base_model", load)
    reading[0] = (100 * need, 100 * need)
    with pytest.raises(ChatRequestError, match=r"adapters: 'mine' needs the base loaded as int8, which cannot load "
                                               r"on this machine \(no int8 kernel for this CPU\)"):
        scheduler().compare(DEMO, [("base", None), ("mine", int8)], hello * 2, short)
