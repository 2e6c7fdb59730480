"""The web process's chat service makes way for training: while a job runs on its host, its loaded bases are
unloaded, and what the job holds is known, so a base that would not fit beside it waits."""

import pytest

from app.chat.tab import ChatService, speed_text
from jobs.chat.request import GenerationSettings
from storage import jobs_repo
from storage.models import JobStatus


def test_loaded_bases_are_released_while_a_job_runs(studio):
    chat = ChatService(studio)
    assert chat.release_if_training() == []  # no engine yet: nothing loaded, nothing to do
    replies = list(chat.compare_stream("demo-tiny-llama", ["base"], [[{"role": "user", "content": "hi"}]],
                                       GenerationSettings(max_new_tokens=3)))[-1]
    assert chat.scheduler().resident_bytes() > 0
    assert chat.release_if_training() == []  # nothing is training: the base stays
    assert "base: " in speed_text(["base"], replies) and "tokens/s" in speed_text(["base"], replies)
    with studio.db.write() as session:
        elsewhere = jobs_repo.create_job(session, name="elsewhere", spec={})
        elsewhere.status, elsewhere.worker = JobStatus.RUNNING, "gpu-host-7:4242"
    assert chat.release_if_training() == []  # a job on another host needs another host's device
    assert chat.training_bytes() == 0
    with studio.db.write() as session:
        here = jobs_repo.create_job(session, name="busy", spec={})
        here.status, here.worker = JobStatus.RUNNING, f"{studio.settings.host_name}:4242"
        here_id = here.id
    assert chat.training_bytes() is None  # its child has not recorded its estimate yet: it may hold anything
    assert chat.release_if_training() == ["demo-tiny-llama"]
    assert chat.scheduler().resident_bytes() == 0
    with studio.db.write() as session:
        jobs_repo.get_job(session, here_id).provenance = {"memory_estimate_bytes": 3 << 30}
    assert chat.training_bytes() == 3 << 30


def test_generation_settings_are_checked():
    bad = GenerationSettings(top_k=-1, repetition_penalty=0.5)
    assert [p.split(":")[0] for p in bad.problems()] == ["top_k", "repetition_penalty"]
    assert GenerationSettings(top_k=40, repetition_penalty=1.2).problems() == []


def test_a_reader_that_stops_early_ends_the_generation(studio):
    """Stop (or a closed page) closes the stream: the generate behind it ends at its next step, so the shared model
    is free for the next request at once (tests/jobs/chat/test_scheduler.py times it)."""
    import time

    chat = ChatService(studio)
    settings = GenerationSettings(max_new_tokens=900, temperature=1.0, top_p=1.0)
    hello = [[{"role": "user", "content": "hi"}]]
    stream = chat.compare_stream("demo-tiny-llama", ["base"], hello, settings)
    while (replies := next(stream)).token_counts[0] < 3:
        pass
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5  # not the ~900 tokens still to go
    assert 3 <= replies.token_counts[0] < 900
    done = list(chat.compare_stream("demo-tiny-llama", ["base"], hello, GenerationSettings(max_new_tokens=2)))
    assert done[-1].token_counts[0] <= 2


def test_every_refusal_reaches_the_page_in_words(studio):
    """A prompt over the base's context and too many generations of one person are refused as messages, through the
    same service the page and the API call."""
    import gradio as gr

    from storage.access import Person, acting_as

    chat = ChatService(studio)
    hello = [[{"role": "user", "content": "hi"}]]
    too_long = chat.compare_stream("demo-tiny-llama", ["base"], hello, GenerationSettings(max_new_tokens=2048))
    with pytest.raises(gr.Error, match=r"prompt: \d+ tokens .* the limit is 0 \(the base's context of 1,024 tokens "
                                       r"minus max_new_tokens 2,048\)"):
        next(too_long)
    huge = [[{"role": "user", "content": "x" * (1 << 20)}]]
    with pytest.raises(gr.Error, match="prompt: 1,048,576 characters"):
        next(chat.compare_stream("demo-tiny-llama", ["base"], huge, GenerationSettings()))
    long = GenerationSettings(max_new_tokens=900, temperature=1.0)
    with acting_as(Person("ann")):
        running = [chat.compare_stream("demo-tiny-llama", ["base"], hello, long) for _ in range(3)]
        next(running[0]), next(running[1])
        with pytest.raises(gr.Error, match="generations: you already have 2 running or waiting"):
            next(running[2])
    for stream in running:
        stream.close()


def test_a_compare_waiting_for_its_turn_says_so():
    from jobs.chat.request import Replies

    assert speed_text(["base"], Replies.waiting(1, 3)) == "waiting for a turn: 3 other generation(s) running or waiting"
    memory = "waiting for 1.20 GiB free to load demo-tiny-llama (0.50 GiB free now); a training job here holds 3 GiB"
    assert speed_text(["base"], Replies.waiting(1, 3, note=memory)) == memory


def test_the_upkeep_thread_runs_suites_on_a_new_adapter(studio, demo_model_dir, tmp_path, monkeypatch):
    import shutil
    import time

    import app.chat.tab as chat_tab
    from app.chat import suites_panel
    from jobs.data.formats import parse_file
    from jobs.data.store import store_parsed
    from jobs.spec import parse_spec
    from jobs.studio import EXAMPLE_DATASET_FILE
    from jobs.training.train import train
    from storage.models import Adapter

    chat = ChatService(studio)
    suites_panel.save(studio, "follow", "What is 2 plus 3? => 5")
    short = GenerationSettings(max_new_tokens=4)
    assert suites_panel.run(studio, chat, "follow", "demo-tiny-llama", ["base"], short) == 1
    monkeypatch.setattr(chat_tab, "UPKEEP_POLL_S", 0.2)
    stop = chat_tab.start_upkeep(studio, chat)
    try:
        data, _ = store_parsed(parse_file(EXAMPLE_DATASET_FILE), tmp_path / "data")
        spec = parse_spec({"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0, "save_steps": 99})
        trained = train(spec, tmp_path / "run", str(demo_model_dir), data, lambda *a: None, lambda: False)
        shutil.copytree(trained.adapter_dir, studio.absolute("adapters/fresh"))
        with studio.db.write() as session:
            session.add(Adapter(name="fresh", base_model="demo-tiny-llama", path="adapters/fresh", size_bytes=1))
        deadline = time.monotonic() + 60
        while "fresh" not in suites_panel.results(studio, "follow", "demo-tiny-llama").panes:
            assert time.monotonic() < deadline, "the new adapter was not run on the suite"
            time.sleep(0.5)
    finally:
        stop.set()
    grid = suites_panel.results(studio, "follow", "demo-tiny-llama")
    assert grid.panes == ["base", "fresh"] and grid.logliks[(0, "fresh")] is not None
