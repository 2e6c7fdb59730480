"""Start the studio: `python -m app [--host 127.0.0.1] [--port 7860] [--no-worker]`."""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; these machines may be offline
STOP_REQUESTED = threading.Event()
_exit_code = [0]


def _drive_searches(studio) -> None:
    from storage.search_store import may_have_searches

    if may_have_searches(studio.settings):
        from jobs.search.driver import drive_searches  # Optuna loads once there is a search, not at start

        drive_searches(studio)


def request_stop(code: int) -> None:
    """A signal handler: end the studio (atexit then stops the worker gracefully). It raises SystemExit where the
    signal lands, to interrupt a slow import or build step, and also records the request, because Python swallows
    an exception raised inside a `__del__` (seen in CI: Ctrl+C landed in a regex object's finaliser during garbage
    collection and was lost, and the app served on); the main loop below honours the record."""
    _exit_code[0] = code
    STOP_REQUESTED.set()
    raise SystemExit(code)


def quiet_swallowed_stop(unraisable) -> None:
    """sys.unraisablehook: a stop request swallowed in a finaliser is honoured (request_stop), not an error to print
    with a traceback; anything else goes to Python's own hook."""
    if isinstance(unraisable.exc_value, SystemExit) and STOP_REQUESTED.is_set():
        return
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    sys.unraisablehook = quiet_swallowed_stop
    # Ctrl+C ends the studio as SIGTERM does, quietly: as KeyboardInterrupt it printed a traceback from whichever
    # import or build step it landed in. SystemExit prints none, in atexit too.
    signal.signal(signal.SIGINT, lambda *_: request_stop(130))
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack, to stderr

from jobs.queue.embedded import EmbeddedWorker  # noqa: E402
from jobs.queue.notifier import start_notifier  # noqa: E402
from jobs.queue.reaper import reap_interval_s, start_reaper  # noqa: E402
from jobs.studio import REPO_ROOT, Studio, open_studio  # noqa: E402

log = logging.getLogger("app")
UPLOAD_CACHE_MAX_AGE_S = 86400.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def login_refusal(host: str, accounts: bool) -> str | None:
    """Why the studio must not start as asked, or None."""
    if os.environ.get("STUDIO_AUTH"):
        return ("error: STUDIO_AUTH (one shared login) is gone: each person gets an account instead. Unset it and "
                "run `python -m app users add NAME --admin` (then `users add` for everyone else).")
    if not is_loopback(host) and not accounts:
        return (f"error: refusing to listen on {host} without accounts: anyone who can reach it could use the "
                f"studio. Add one with `python -m app users add NAME --admin` (every person then signs in), or "
                f"keep the default 127.0.0.1.")
    return None


def start_embedded_worker() -> EmbeddedWorker:
    """A worker in its own process (training never runs in the web process), kept alive by the app and stopped
    gracefully with it."""
    worker = EmbeddedWorker(REPO_ROOT)
    worker.start()
    atexit.register(worker.stop)
    return worker


def build_in_child(models_dir) -> None:
    """Build the demo base in a child process: building imports torch and transformers, which would then stay in the
    web process for good (its idle resident set 604 MB against 240 MB without them: bench/memory_breakdown.py
    --idle). The build renames a finished folder into place, so a failed child leaves nothing half-written."""
    import subprocess

    code = "import sys; from jobs.models.demo import ensure_demo_model; ensure_demo_model(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(models_dir)], cwd=REPO_ROOT, check=False)
    if done.returncode:
        log.warning("building the demo model in a child process failed (%s); building it here", done.returncode)


def prepare(studio: Studio) -> None:
    """First-use setup for the offline default (the demo base model and the bundled datasets), saying what it does."""
    from jobs.data.store import ensure_bundled_datasets, remove_orphan_files
    from jobs.data.uploads import clean_upload_cache, upload_cache_dir
    from jobs.models.demo import demo_model_ready, ensure_demo_model
    from jobs.presets import adopt_preset_files
    from jobs.training.registry import settle_interrupted_deletes

    if not demo_model_ready(studio.settings.models_dir):
        log.info("first start: building the offline demo model in %s (a few seconds)", studio.settings.models_dir)
        build_in_child(studio.settings.models_dir)
    ensure_demo_model(studio.settings.models_dir)  # ready by now; builds here only if the child could not
    ensure_bundled_datasets(studio)
    settle_interrupted_deletes(studio)
    remove_orphan_files(studio)
    if adopted := adopt_preset_files(studio):
        log.info("%d preset file(s) of an earlier version are now the local person's presets", adopted)
    # Uploads that never became datasets (refused, abandoned) leave Gradio's cache at each start.
    clean_upload_cache(upload_cache_dir(), max_age_s=UPLOAD_CACHE_MAX_AGE_S)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:
        from app.account.users_cli import users_command

        raise SystemExit(users_command(open_studio(), argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m app", description="Start the QLoRA studio. Accounts: "
                                     "python -m app users add|remove|list.")
    parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; any other needs accounts)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", "7860")))
    parser.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    signal.signal(signal.SIGTERM, lambda *_: request_stop(0))  # SIGTERM too runs atexit, which stops the worker
    for chatty in ("httpx", "alembic"):  # Gradio's own HTTP calls and "no migration to run" are not news
        logging.getLogger(chatty).setLevel(logging.WARNING)
    log.info("opening the studio in %s", os.environ.get("STUDIO_DATA_DIR", "./studio-data"))
    studio = open_studio(warn=True)
    from app.web.accounts import accounts_exist

    accounts = accounts_exist(studio)
    if refusal := login_refusal(args.host, accounts):
        raise SystemExit(refusal)
    prepare(studio)
    if not args.no_worker:
        log.info("starting the worker (one job at a time on this machine's device)")
        start_embedded_worker()

    # Stale jobs are requeued even with no worker alive; searches ask for, follow and prune their trials here.
    start_reaper(studio, reap_interval_s(studio.settings), also=lambda: _drive_searches(studio))
    if studio.settings.webhook_url:
        log.info("job events go to the webhook %s", studio.settings.webhook_url)
        start_notifier(studio, studio.settings.webhook_url)

    from app.chat.tab import ChatService, start_upkeep
    from app.web.server import build_app, launch_options

    chat = ChatService(studio)
    start_upkeep(studio, chat)  # chat makes way for training; prompt suites follow new adapters
    log.info("building the web app")
    app = build_app(studio, chat)
    app.queue(default_concurrency_limit=1)
    # Once an account exists every page and API call signs in (app/web/guard.py), also accounts added while it runs.
    app.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True,
               **launch_options(studio, app=app))
    log.info("ready: open %s in a browser (Ctrl+C stops the studio)", app.local_url)
    serve_until_stopped(app)


def serve_until_stopped(app) -> None:
    """Gradio's block_thread, but it also ends on a stop request whose SystemExit was swallowed (request_stop)."""
    while app.is_running and not STOP_REQUESTED.wait(0.2):
        pass
    raise SystemExit(_exit_code[0])


if __name__ == "__main__":
    main()
