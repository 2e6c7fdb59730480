"""Batched compare: one generate with adapter_names gives each row what that adapter gives alone (through the
generation scheduler, as every caller does)."""

import threading

import pytest
import torch

from jobs.chat.engine import ChatEngine
from jobs.chat.request import GenerationSettings
from jobs.chat.scheduler import GenerationScheduler

pytestmark = pytest.mark.slow


def _engine(tmp_path, demo_model_dir):
    """A scheduler (every generation goes through one) on a fresh engine over a models folder with the demo base."""
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_dir.name).symlink_to(demo_model_dir)
    return GenerationScheduler(ChatEngine(models))


PROMPTS = ["What is 2 plus 3?", "Reverse the words: apple owl key", "Uppercase the word: lime"]


def test_batched_rows_equal_each_adapter_alone(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("a2", two_adapters[1]), ("base", None)]
    greedy = GenerationSettings(max_new_tokens=16, temperature=0)
    for prompt in PROMPTS:
        # Different conversation lengths per pane force real left padding inside the batch.
        conversations = [[{"role": "user", "content": prompt}],
                         [{"role": "user", "content": prompt + " please, now"}],
                         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]]
        batched = engine.compare("demo-tiny-llama", panes, conversations, greedy)
        alone = [engine.compare("demo-tiny-llama", [pane], [conv], greedy)[0]
                 for pane, conv in zip(panes, conversations, strict=True)]
        assert batched == alone
    assert len(set(batched)) > 1  # the adapters really differ from each other and from the base


def test_adapters_share_one_base(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    engine.compare("demo-tiny-llama", [("a1", two_adapters[0]), ("a2", two_adapters[1])],
                   [[{"role": "user", "content": "hi"}]] * 2, GenerationSettings(max_new_tokens=2))
    assert engine.engine.loaded() == ["demo-tiny-llama"]
    model = next(iter(engine.engine._bases.values())).model
    assert set(model.peft_config) == {"adapter_0", "adapter_1"}
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())


def test_streaming_yields_growing_replies_and_sampling_is_seeded(tmp_path, demo_model_dir, two_adapters):
    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("base", None)]
    conversations = [[{"role": "user", "content": "Spell the word: cat"}]] * 2
    sampled = GenerationSettings(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    updates = list(engine.stream("demo-tiny-llama", panes, conversations, sampled))
    assert len(updates) > 2 and all(len(u) == 2 for u in updates)
    again = engine.compare("demo-tiny-llama", panes, conversations, sampled)
    assert again == updates[-1]
    torch.manual_seed(0)


def test_bad_generation_settings_are_named():
    problems = GenerationSettings(max_new_tokens=0, temperature=-1, top_p=0).problems()
    assert [p.split(":")[0] for p in problems] == ["max_new_tokens", "temperature", "top_p"]


def test_reference_loglik_equals_a_direct_computation(tmp_path, demo_model_dir, two_adapters):
    """The batched teacher-forced score of a reference answer against log-softmax computed by hand, one model
    (base, or the base with one adapter) at a time."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from jobs.models.loading import load_base_model
    from jobs.spec import TrainSpec

    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("base", None), ("a2", two_adapters[1])]
    prompt, reference = [{"role": "user", "content": "What is 2 plus 3?"}], "5"
    batched = engine.reference_logliks("demo-tiny-llama", panes, prompt, reference)

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    context = tokenizer(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
                        add_special_tokens=False)["input_ids"]
    answer = tokenizer(reference + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + answer])
    for (name, adapter_dir), score in zip(panes, batched, strict=True):
        # The same 4-bit base the engine loads, alone, with at most one adapter: no batch, no adapter_names.
        model = load_base_model(TrainSpec(), str(demo_model_dir), "cpu", torch.float32).eval()
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, adapter_dir)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits.float()[0], dim=-1)
        direct = sum(logprobs[len(context) + i - 1, token].item() for i, token in enumerate(answer)) / len(answer)
        assert score == pytest.approx(direct, abs=1e-4), name
    assert len({round(s, 4) for s in batched}) == 3


def _register(studio, name: str, adapter_dir):
    """An adapter row for a folder trained above, with its run's checkpoints where the studio keeps them."""
    import shutil

    from storage import jobs_repo
    from storage.models import Adapter

    shutil.copytree(adapter_dir, studio.absolute(f"adapters/{name}"))
    with studio.db.write() as session:
        job = jobs_repo.create_job(session, name=name, spec={})
        session.add(Adapter(name=name, base_model="demo-tiny-llama", path=f"adapters/{name}", size_bytes=1,
                            job_id=job.id))
        job_id = job.id
    shutil.copytree(adapter_dir.parent / "checkpoints", studio.run_dir(job_id) / "checkpoints")


def test_a_prompt_suite_stores_one_result_per_prompt_and_pane(studio, demo_model_dir, two_adapters):
    from jobs.chat.request import CHECKPOINT_MARKER, resolve_panes
    from jobs.chat.suites import diff_html, parse_suite_text, run_suite, save_suite, suite_grid, suites_to_follow
    from jobs.training.checkpoints import COMPLETE_MARKER

    assert CHECKPOINT_MARKER == COMPLETE_MARKER
    _register(studio, "a1", two_adapters[0])
    _register(studio, "a2", two_adapters[1])
    engine = GenerationScheduler(ChatEngine(studio.settings.models_dir))
    save_suite(studio, "smoke", parse_suite_text("What is 2 plus 3? => 5\n\nUppercase the word: lime\n"))
    greedy = GenerationSettings(max_new_tokens=8, temperature=0)
    names = ["base", "a1", "a2@step-6"]  # a checkpoint of a1's run is a pane like any adapter
    assert run_suite(studio, engine, "smoke", "demo-tiny-llama", resolve_panes(studio, "demo-tiny-llama", names),
                     greedy) == 6
    grid = suite_grid(studio, "smoke", "demo-tiny-llama")
    assert grid.panes == ["base", "a1", "a2@step-6"] and len(grid.replies) == 6
    assert all(grid.logliks[(0, pane)] is not None for pane in names)
    assert all(grid.logliks[(1, pane)] is None for pane in names)  # no reference, no score
    # A re-run replaces its cells rather than adding to them; the suite now follows this base.
    run_suite(studio, engine, "smoke", "demo-tiny-llama", resolve_panes(studio, "demo-tiny-llama", ["a1"]), greedy)
    assert len(suite_grid(studio, "smoke", "demo-tiny-llama").replies) == 6
    assert suites_to_follow(studio, "demo-tiny-llama") == ["smoke"]
    assert "What is 2 plus 3?" in diff_html(grid, "base", "a1")

    # A new adapter of this base is run on the suite by itself, with the settings the suite last ran with.
    from jobs.chat.suites import follow_new_adapters, newest_adapter_id

    seen = newest_adapter_id(studio)
    _register(studio, "a3", two_adapters[1])
    seen, runs = follow_new_adapters(studio, lambda: engine, seen)
    assert runs == ["smoke: a3"] and seen == newest_adapter_id(studio)
    grid = suite_grid(studio, "smoke", "demo-tiny-llama")
    assert len(grid.replies) == 8 and grid.replies[(0, "a3")] == grid.replies[(0, "a2@step-6")]  # the last step
    assert follow_new_adapters(studio, lambda: engine, seen) == (seen, [])


def test_the_lru_never_holds_more_than_its_budget(tmp_path, demo_model_dir):
    import shutil

    from jobs.chat.engine import resident_estimate
    from jobs.chat.request import ChatRequestError

    bases = []
    for name in ("m1", "m2", "m3"):
        shutil.copytree(demo_model_dir, tmp_path / name)
        bases.append(str(tmp_path / name))
    one = resident_estimate(bases[0], bases[0], "cpu")
    engine = GenerationScheduler(ChatEngine(tmp_path / "models", budget_bytes=int(2.5 * one)))  # room for two
    hello = [[{"role": "user", "content": "hi"}]]
    for base in (bases[0], bases[1], bases[2], bases[0], bases[1]):
        engine.compare(base, [("base", None)], hello, GenerationSettings(max_new_tokens=1))
        assert engine.resident_bytes() <= engine.engine.budget_bytes and len(engine.engine._bases) <= 2
    assert engine.engine.loaded() == [bases[0], bases[1]]  # the two used last; m3 went first
    assert engine.release() == [bases[0], bases[1]] and engine.resident_bytes() == 0

    small = GenerationScheduler(ChatEngine(tmp_path / "models", budget_bytes=one // 2))
    with pytest.raises(ChatRequestError, match="more than the chat memory budget"):
        small.compare(bases[0], [("base", None)], hello, GenerationSettings(max_new_tokens=1))
    assert not small.engine._bases


def test_logprobs_are_the_raw_models_and_asking_changes_no_token(tmp_path, demo_model_dir, two_adapters):
    """With a repetition penalty (ours, after the reader): the replies are those without logprobs, and each token's
    log-probability is the log-softmax of the model's own logits, checked by a teacher-forced pass."""
    engine = _engine(tmp_path, demo_model_dir)
    panes = [("a1", two_adapters[0]), ("base", None)]
    conversations = [[{"role": "user", "content": "Reverse the words: apple owl key"}]] * 2
    plain = GenerationSettings(max_new_tokens=10, temperature=0, repetition_penalty=1.3)
    asked = GenerationSettings(max_new_tokens=10, temperature=0, repetition_penalty=1.3, logprobs=2)
    without = engine.compare("demo-tiny-llama", panes, conversations, plain)
    generation = engine.engine.begin("demo-tiny-llama", panes, conversations, asked, 4096)  # the scheduler is idle
    while not generation.advance(float("inf"), threading.Event(), lambda replies: None):
        pass
    replies = generation.replies()
    assert without.logprobs is None and list(replies) == list(without)
    entries, tokens = replies.logprobs[1], generation.tokens[1]
    assert len(entries) == len(tokens) == replies.token_counts[1] and "".join(e["token"] for e in entries) == replies[1]
    assert all(len(e["top_logprobs"]) == 2 for e in entries)

    loaded = generation.batches[0].group.loaded
    prompt = loaded.render("__base__", conversations[1], add_generation_prompt=True, tokenize=False)
    context = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert replies.prompt_tokens[1] == len(context)
    ids = torch.tensor([context + tokens])
    with torch.inference_mode(), loaded.model.disable_adapter():
        direct = torch.log_softmax(loaded.model(input_ids=ids).logits.float()[0], dim=-1)
    expected = [direct[len(context) + i - 1, token].item() for i, token in enumerate(tokens)]
    assert [e["logprob"] for e in entries] == pytest.approx(expected, abs=1e-3)
