"""One studio with accounts, attacked from outside: two people (alice, bob) and an admin (root), a real worker, the
real app with its front door (app/web/guard.py) on a free port, and gradio_client sessions signed in as each. It is
the session's shared `signed_in_studio` (tests/conftest.py, SignedInStudio): other modules use it too, so a test here
names its own data and never assumes it is alone in the studio. The app trusts 127.0.0.1 as a proxy, so a test can
speak for other client addresses through X-Forwarded-For (the login limits count per address)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SignedInStudio

PASSWORD = SignedInStudio.PASSWORD
BASE = "demo-tiny-llama"
Team = SignedInStudio


@pytest.fixture(scope="session")
def team(signed_in_studio) -> SignedInStudio:
    return signed_in_studio


def chat_rows(answer: str, count: int = 24) -> str:
    """A chat dataset whose every answer is `answer` (JSONL text)."""
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                            {"role": "assistant", "content": answer}]}) + "\n" for i in range(count))
