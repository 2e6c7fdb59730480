"""The CLI as a person against a running studio: sign in with a name and a password (from STUDIO_PASSWORD or a
prompt, never an argument), then call the same API endpoints the browser's actions call. Nothing is bypassed: the
studio checks who may do what inside each handler, as it does for the page."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

PASSWORD_ENV = "STUDIO_PASSWORD"


@dataclass(frozen=True)
class Upload:
    """A local file an endpoint receives as an upload."""

    path: str


class SignInFailed(Exception):
    pass


class Remote:
    def __init__(self, url: str, user: str = "") -> None:
        from gradio_client import Client

        auth = (user, os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {user} at {url}: ")) \
            if user else None
        try:
            self.client = Client(url, auth=auth, verbose=False, download_files=True)
        except ValueError as error:  # gradio_client's words for a refused sign-in
            raise SignInFailed(f"error: signing in to {url} as {user or 'nobody'} failed: {error}") from None

    def call(self, endpoint: str, values: dict):
        from gradio_client import handle_file

        sent = {name: handle_file(value.path) if isinstance(value, Upload) else value for name, value in values.items()}
        return self.client.predict(**sent, api_name=f"/{endpoint}")
