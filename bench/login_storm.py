"""A login storm: 32 clients keep failing to sign in while one signed-in person loads pages; how long that person
waits. Two arms in one run, side by side:

- `studio`: the studio's front door (app/web/guard.py, app/web/gate.py): limits per address and account, passwords
  checked by one thread off the event loop, at most STUDIO_LOGIN_BACKLOG waiting.
- `studio_no_limits`: the same with the failure limits set out of reach, so every attempt is hashed: what the
  bounded pool alone does for everyone else.
- `gradio_auth` (before): Gradio's own login with the same argon2 check as its `auth` callable, which Gradio calls on
  its event loop: every check stalls every other request for its duration.

    python bench/login_storm.py [--clients 32] [--seconds 20] [--smoke]

Each arm runs the real app (the Train tab and all) in this process on a free port; the storm comes from threads of
httpx clients, each from its own address (X-Forwarded-For, the app trusting 127.0.0.1 as a proxy, so the
per-address limit applies as it would to 32 machines; the per-account limit then holds for the one name they try).
The person loads "/" and "/config" in turn (as a browser opening the studio), and reports are medians and p95 of
those page times, alone and during the storm."""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bench.machine import write_report  # noqa: E402

PASSWORD = "correct horse battery"


NO_LIMITS = {"STUDIO_LOGIN_FAILURES": "1000000000", "STUDIO_LOGIN_CLIENT_FAILURES": "1000000000",
             "STUDIO_LOGIN_ACCOUNT_FAILURES": "1000000000"}
ARMS = ("studio", "studio_no_limits", "gradio_auth")


def open_bench_studio(folder: Path, arm: str):
    import shutil

    from jobs.models.demo import ensure_demo_model
    from jobs.studio import open_studio
    from storage.settings import load_settings

    env = {"STUDIO_DATA_DIR": str(folder / "data"), "STUDIO_TRUSTED_PROXIES": "127.0.0.1",
           **(NO_LIMITS if arm == "studio_no_limits" else {})}
    studio = open_studio(load_settings(env))
    demo = ensure_demo_model(folder.parent / "shared-models")  # built once, copied into each arm's studio
    shutil.copytree(demo, Path(studio.settings.models_dir) / demo.name, dirs_exist_ok=True)
    return studio


def add_people(studio) -> None:
    from app.web.gate import PASSWORDS
    from storage import users_repo

    with studio.db.write() as session:
        for name in ("alice", "target"):
            if users_repo.get_user(session, name) is None:
                users_repo.add_user(session, name, PASSWORDS.hash(PASSWORD))


def launch(studio, arm: str):
    """The app of one arm, launched; returns (app, a signed-in httpx client for alice)."""
    import gradio as gr
    import httpx

    from app.web.server import build_app, launch_options
    from tests.servers import free_port

    app = build_app(studio)
    app.queue(default_concurrency_limit=1)
    options = launch_options(studio)
    if arm == "gradio_auth":
        for key in ("auth_dependency", "app_kwargs"):
            options.pop(key)
        options["auth"] = functools.partial(_gradio_check, studio)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **options)
    person = httpx.Client(base_url=app.local_url, timeout=120)
    answer = person.post("login", data={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    assert isinstance(app, gr.Blocks)
    return app, person


def _gradio_check(studio, name: str, password: str) -> bool:
    """What the studio's Gradio `auth` callable did before its own front door: argon2, on Gradio's event loop."""
    from app.web.gate import verify
    from storage import users_repo

    with studio.db.read() as session:
        user = users_repo.get_user(session, name or "")
        stored = user.password_hash if user is not None else None
    return verify(stored, password or "")


def page_times(person, seconds: float, stop: threading.Event | None = None) -> list[float]:
    times, deadline = [], time.monotonic() + seconds
    paths = ("/", "/config")
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        for path in paths:
            started = time.monotonic()
            answer = person.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
            times.append(time.monotonic() - started)
    return times


def storm(url: str, clients: int, stop: threading.Event, counts: dict) -> list[threading.Thread]:
    import httpx

    def attacker(index: int) -> None:
        session = httpx.Client(base_url=url, timeout=120, headers={"X-Forwarded-For": f"203.0.113.{index + 1}"})
        while not stop.is_set():
            status = session.post("login", data={"username": "target", "password": f"guess-{index}"}).status_code
            counts[status] = counts.get(status, 0) + 1

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] if ordered else None
    return {"pages": len(times), "median_s": round(statistics.median(times), 4) if times else None,
            "p95_s": round(p95, 4) if p95 is not None else None, "max_s": round(max(times), 4) if times else None}


def run_arm(arm: str, clients: int, seconds: float, folder: Path) -> dict:
    studio = open_bench_studio(folder / arm, arm)
    add_people(studio)
    app, person = launch(studio, arm)
    try:
        page_times(person, min(2.0, seconds))  # warm: the first page builds caches
        quiet = page_times(person, seconds / 2)
        stop, counts = threading.Event(), {}
        threads = storm(app.local_url, clients, stop, counts)
        time.sleep(1.0)  # the storm is on
        stormy = page_times(person, seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        app.close()
        studio.db.dispose()
    return {"arm": arm, "alone": summary(quiet), "storm": summary(stormy),
            "login_answers": {str(status): count for status, count in sorted(counts.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true", help="a second and 4 clients, to check it runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "login_storm.json")
    args = parser.parse_args()
    clients, seconds = (4, 1.0) if args.smoke else (args.clients, args.seconds)
    with tempfile.TemporaryDirectory() as folder:
        arms = [run_arm(arm, clients, seconds, Path(folder)) for arm in ARMS]
    by_arm = {arm["arm"]: arm for arm in arms}
    ratio = (by_arm["gradio_auth"]["storm"]["p95_s"] / by_arm["studio"]["storm"]["p95_s"]
             if by_arm["studio"]["storm"]["p95_s"] else None)
    pool_ratio = (by_arm["gradio_auth"]["storm"]["p95_s"] / by_arm["studio_no_limits"]["storm"]["p95_s"]
                  if by_arm["studio_no_limits"]["storm"]["p95_s"] else None)
    for arm in arms:
        print(f"{arm['arm']:>12}: alone p95 {arm['alone']['p95_s']} s, during the storm median "
              f"{arm['storm']['median_s']} s, p95 {arm['storm']['p95_s']} s, max {arm['storm']['max_s']} s "
              f"({arm['storm']['pages']} pages); sign-in answers {arm['login_answers']}")
    print(f"p95 during the storm, before over now: {ratio:.1f}x; over the pool alone: {pool_ratio:.1f}x"
          if ratio and pool_ratio else "")
    write_report(args.out, {"clients": clients, "seconds": seconds, "arms": arms,
                            "storm_p95_ratio_before_over_now": ratio,
                            "storm_p95_ratio_before_over_pool_alone": pool_ratio})


if __name__ == "__main__":
    main()
