"""One person's credential for another service (a hub token, a W&B API key): set, clear and status over the one
secret store (jobs/secrets.py), with the same checks and words for every kind. jobs/hub_access.py and
jobs/tracker_keys.py each declare theirs; what a credential is then used for stays in those modules."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.secrets import SecretError, drop_secret, put_secret, secret_hint
from jobs.studio import Studio

MAX_CREDENTIAL_CHARS = 200


@dataclass(frozen=True)
class Credential:
    """A kind of per-person credential and the words its refusals use."""

    kind: str
    """Its kind in the secret store."""
    field: str
    """The field a refusal names ('token', 'key')."""
    noun: str
    """What it is, in words ('hub token', 'W&B API key')."""
    where: str
    """Where a person gets one, for the empty-value message ('huggingface.co/settings/tokens')."""
    error: type[ValueError]
    """The module's own error type, raised for every refusal (its callers catch that one)."""
    max_chars: int = MAX_CREDENTIAL_CHARS

    def set(self, studio: Studio, value: str | None) -> str:
        """Keep `value` (surrounding spaces and line breaks of a paste dropped) as the acting person's credential,
        replacing theirs; returns its hint. Every refusal names the field."""
        value = (value or "").strip()
        if not value:
            raise self.error(f"{self.field}: paste your {self.noun} ({self.where})")
        if len(value) > self.max_chars:
            raise self.error(f"{self.field}: {len(value)} characters; a {self.noun} has at most {self.max_chars}")
        if any(char.isspace() or not char.isprintable() for char in value):
            raise self.error(f"{self.field}: a {self.noun} has no spaces, line breaks or control characters")
        try:
            return put_secret(studio, self.kind, value)
        except SecretError as error:
            raise self.error(str(error)) from None

    def clear(self, studio: Studio) -> None:
        """Forget the acting person's credential of this kind (nothing stored: nothing to do)."""
        try:
            drop_secret(studio, self.kind)
        except SecretError as error:
            raise self.error(str(error)) from None

    def hint(self, studio: Studio) -> str | None:
        """The hint of the acting person's credential (at most its last 4 characters), or None without one."""
        try:
            return secret_hint(studio, self.kind)
        except SecretError:
            return None
