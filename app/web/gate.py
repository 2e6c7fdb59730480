"""Who is asking, and signing in: the studio's own sessions, kept in the ledger (storage/sessions_repo.py).

Every request is identified once (app/web/guard.py): without accounts it is the one local person; with accounts, the
person whose live session the cookie names, or nobody. Signing in is bounded three ways, so that a storm of
attempts never stalls other people: failed attempts are limited per client address and account (counted from the
audit log, so the count survives restarts and holds across web processes), passwords are checked by a small pool of
threads off the event loop, and only `login_backlog` attempts may wait for that pool at once."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool

from jobs.studio import Studio
from storage import audit_repo, sessions_repo, users_repo
from storage.access import LOCAL_OWNER
from storage.models import utcnow

log = logging.getLogger("app")
PASSWORDS = PasswordHasher()  # argon2id; a fresh random salt in every hash
COOKIE = "studio_session"
MAX_PASSWORD_CHARS = 1024
"""Longer is refused unread: argon2 would hash a megabyte just as willingly."""
_DUMMY_HASH = PASSWORDS.hash("an unknown name costs the same time as a wrong password")


@dataclass(frozen=True)
class Identity:
    name: str | None
    """The signed-in person; the local person without accounts; None: nobody (sign in first)."""
    admin: bool = False
    accounts: bool = True


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a session token, or a refusal in words with its HTTP status."""

    token: str | None = None
    refusal: str | None = None
    status: int = 200
    wait_s: int | None = None


def verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches the stored argon2 hash (an unknown name costs the same time)."""
    try:
        PASSWORDS.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


class Gate:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        settings = studio.settings
        self.limits = sessions_repo.Limits(settings.session_idle_s, settings.session_max_s)
        self._checks = ThreadPoolExecutor(settings.login_threads, thread_name_prefix="password-check")
        self._waiting = 0  # attempts queued for the pool (only the event loop's thread touches it)
        self._in_flight: Counter[tuple[str, str]] = Counter()  # attempts being checked, per (name, client); the
        # event loop's thread alone reads and writes it
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    # --- who is asking ------------------------------------------------------------------------------------------
    def identify(self, token: str | None) -> Identity:
        """The request's person (a database read; a write at most once a minute per session, for the idle limit)."""
        with self.studio.db.read() as session:
            if not users_repo.accounts_exist(session):
                return Identity(LOCAL_OWNER, admin=True, accounts=False)
            user = sessions_repo.signed_in_user(session, token, self.limits)
            row = sessions_repo.find(session, token) if user is not None else None
            identity = Identity(user.name, admin=user.is_admin) if user is not None else Identity(None)
        if row is not None and sessions_repo.needs_touch(row):
            with self.studio.db.write() as session:
                sessions_repo.touch(session, token)
        return identity

    def client_address(self, scope: dict) -> str:
        """The connecting address, or the first untrusted one in X-Forwarded-For when it came through a trusted
        proxy (a forwarded address from anyone else is a claim, not a fact)."""
        peer = (scope.get("client") or ("", 0))[0] or ""
        if not self._trusted(peer):
            return peer
        forwarded = _header(scope, b"x-forwarded-for")
        hops = [part.strip() for part in forwarded.split(",") if part.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:100]
        return peer

    def is_secure(self, scope: dict) -> bool:
        """Whether the browser reached the studio over TLS (directly, or through a trusted proxy that says so)."""
        if scope.get("scheme") in ("https", "wss"):
            return True
        peer = (scope.get("client") or ("", 0))[0] or ""
        return self._trusted(peer) and _header(scope, b"x-forwarded-proto").lower() == "https"

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

    # --- signing in and out -------------------------------------------------------------------------------------
    async def sign_in(self, name: str, password: str, client: str, user_agent: str) -> SignIn:
        name = (name or "").strip()[:64]
        if not name or not password or len(password) > MAX_PASSWORD_CHARS:
            await run_in_threadpool(self._record, "login_failed", name or None, client)
            return SignIn(refusal="Wrong name or password.", status=401)
        pending = (self._in_flight[(name, client)],
                   sum(count for (_, where), count in self._in_flight.items() if where == client))
        if wait := await run_in_threadpool(self._wait_s, name, client, pending):
            return SignIn(refusal=f"Too many failed sign-ins: try again in {wait} s.", status=429, wait_s=wait)
        if self._waiting >= self.studio.settings.login_backlog:
            return SignIn(refusal="The studio is busy checking other sign-ins: try again in a few seconds.",
                          status=503, wait_s=5)
        self._waiting += 1
        self._in_flight[(name, client)] += 1
        try:
            stored = await run_in_threadpool(self._stored_hash, name)
            ok = await asyncio.get_running_loop().run_in_executor(self._checks, verify, stored, password)
        finally:
            self._waiting -= 1
            self._in_flight[(name, client)] -= 1
            if self._in_flight[(name, client)] <= 0:
                del self._in_flight[(name, client)]
        if not ok:
            await run_in_threadpool(self._record, "login_failed", name, client)
            return SignIn(refusal="Wrong name or password.", status=401)
        return SignIn(token=await run_in_threadpool(self._start, name, client, user_agent))

    def check_password(self, stored: str | None, password: str) -> bool:
        """A password check from a handler's thread, through the same bounded pool as sign-ins."""
        if not password or len(password) > MAX_PASSWORD_CHARS:
            return False
        return self._checks.submit(verify, stored, password).result()

    def sign_out(self, token: str | None, client: str) -> None:
        with self.studio.db.write() as session:
            row = sessions_repo.find(session, token)
            if row is not None:
                audit_repo.record(session, "logout", row.user_name, client=client)
            sessions_repo.end(session, token)

    def _wait_s(self, name: str, client: str, pending: tuple[int, int]) -> int | None:
        """Seconds until this attempt may be made, or None: the first limit reached decides. `pending`: attempts
        still being checked for this name from this client, and from this client in all (they may fail too)."""
        settings = self.studio.settings
        since = utcnow() - timedelta(seconds=settings.login_window_s)
        limits = (((name, client), settings.login_failures_per_pair, pending[0]),
                  ((None, client), settings.login_failures_per_client, pending[1]),
                  ((name, None), settings.login_failures_per_account, 0))
        with self.studio.db.read() as session:
            for (actor, address), limit, in_flight in limits:
                failures = audit_repo.count_since(session, "login_failed", since, actor=actor, client=address)
                if failures + in_flight >= limit:
                    oldest = audit_repo.oldest_since(session, "login_failed", since, actor=actor, client=address)
                    waited = (utcnow() - oldest).total_seconds() if oldest else 0.0
                    return max(1, int(settings.login_window_s - waited + 0.999))
        return None

    def _stored_hash(self, name: str) -> str | None:
        with self.studio.db.read() as session:
            user = users_repo.get_user(session, name)
            return user.password_hash if user is not None and user.disabled_at is None else None

    def _start(self, name: str, client: str, user_agent: str) -> str:
        with self.studio.db.write() as session:
            sessions_repo.end_expired(session, self.limits)
            audit_repo.record(session, "login", name, client=client)
            return sessions_repo.start(session, name, client, user_agent)

    def _record(self, action: str, name: str | None, client: str) -> None:
        with self.studio.db.write() as session:
            audit_repo.record(session, action, name, client=client)


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return ""
