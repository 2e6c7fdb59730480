"""The studio's front door, as ASGI middleware inside Gradio's app: every HTTP request passes here first.

- It identifies the request once (app/web/gate.py) and hands the person to Gradio (`auth_dependency` reads it back), so
  a removed or disabled account, a changed password or an expired session is refused on the very next request.
- It serves the sign-in page and handles `POST /login` (browsers get redirects, API clients such as gradio_client
  JSON and a cookie) and `/logout`.
- It checks ownership on the file route itself: a file under the exports folder is served only to the person whose
  folder it is in (exports/<owner>/...) or to an admin.
- It counts an upload's bytes while they stream in and stops at the person's limit.
- It hands the OpenAI-compatible API (`/v1/...`, app/web/openai_api.py) to its own app, which signs in by API key
  alone: no session cookie is read for it, so no other site's page can make a signed-in browser call it.
- It adds the security headers to every response; a page gets a Content-Security-Policy that allows exactly the
  inline scripts the server itself put in that page (by their hashes) and nothing else: no inline event handlers,
  no `javascript:` URLs, no other origin. ('unsafe-eval' stays allowed: Gradio's charts are Vega, which compiles
  its expressions with Function(); that runs no text a person wrote, and no inline script becomes possible.)"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException

from app.web.gate import COOKIE, Gate, Identity
from jobs.studio import REPO_ROOT

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]
STATIC = REPO_ROOT / "static"
LOGIN_PAGE = (STATIC / "login.html").read_text(encoding="utf-8")
SCRIPT = (STATIC / "studio.js").read_bytes()
MAX_LOGIN_BODY = 8192
PAGES = ("/", "")
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
UPLOAD_ROUTE = "/gradio_api/upload"
SERVE_PREFIX = "/v1/"
PUBLIC_ASSETS = ("/assets/", "/static/", "/svelte/", "/favicon.ico", "/manifest.json")
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
BASE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"same-origin"), (b"cross-origin-opener-policy", b"same-origin"),
                (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]
FILE_POLICY = b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; sandbox"


def page_policy(script_hashes: list[str]) -> str:
    """The Content-Security-Policy of a page whose inline scripts have these sha256 hashes."""
    scripts = " ".join(f"'sha256-{digest}'" for digest in script_hashes)
    return ("default-src 'self'; "
            f"script-src 'self' 'unsafe-eval' {scripts}; "  # Gradio's charts (Vega) compile expressions with Function()
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
            "media-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def inline_script_hashes(page: bytes) -> list[str]:
    return [base64.b64encode(hashlib.sha256(body).digest()).decode() for body in INLINE_SCRIPT.findall(page)]


class Guard:
    def __init__(self, app, gate: Gate, upload_limit: Callable[[Identity], tuple[int, str]],
                 exports_dir: Path, serve=None) -> None:
        self.app = app
        self.serve = serve
        self.gate = gate
        self.upload_limit = upload_limit
        self.exports_dir = Path(exports_dir).resolve()

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        secure = self.gate.is_secure(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        send = _with_headers(send, secure, page=path in PAGES or path == "/login")
        client = self.gate.client_address(scope)
        if path == "/login":
            return await self._login(scope, receive, send, client, secure)
        if path == "/logout":
            return await self._logout(scope, send, client, secure)
        if path.startswith(SERVE_PREFIX) and scope["type"] == "http":
            if self.serve is None:
                return await _json(send, 404, {"error": {"message": "This studio serves no OpenAI-compatible API.",
                                                         "type": "invalid_request_error", "param": None,
                                                         "code": "not_found"}})
            return await self.serve(scope, receive, send)
        if path == "/studio.js":
            return await _respond(send, 200, SCRIPT, b"text/javascript; charset=utf-8")
        if path.startswith(PUBLIC_ASSETS):  # Gradio's own bundle, served to anyone: no database read for each file
            return await self.app(scope, receive, send)
        identity = await run_in_threadpool(self.gate.identify, _cookie(scope, COOKIE))
        scope.setdefault("state", {})["studio_identity"] = identity
        if identity.name is None and method in ("GET", "HEAD") and path in PAGES:
            target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
            return await _redirect(send, f"login?next={quote(target or '/')}")
        if path.startswith(FILE_ROUTES):
            if not self._may_read(path, identity):
                return await _plain(send, 404, "Not found.")
        elif path == UPLOAD_ROUTE and method == "POST" and identity.name is not None:
            return await self._upload(scope, receive, send, identity)
        await self.app(scope, receive, send)

    # --- signing in and out -----------------------------------------------------------------------------------
    async def _login(self, scope: dict, receive: Receive, send: Send, client: str, secure: bool) -> None:
        wants_page = "text/html" in _header(scope, b"accept")
        if scope.get("method") != "POST":
            accounts = (await run_in_threadpool(self.gate.identify, None)).accounts
            if not accounts:
                return await _redirect(send, "./")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return await _page(send, 200, _login_page(query))
        body = await _read_body(receive, MAX_LOGIN_BODY)
        if body is None:
            return await _plain(send, 413, "Too large.")
        form = parse_qs(body.decode("utf-8", "replace"))
        first = {key: values[0] for key, values in form.items() if values}
        result = await self.gate.sign_in(first.get("username", ""), first.get("password", ""), client,
                                         _header(scope, b"user-agent"))
        next_page = _safe_next(first.get("next", ""))
        if result.token is None:
            if wants_page:
                problem = f"wait={result.wait_s}" if result.wait_s else "failed=1"
                return await _redirect(send, f"login?{problem}&next={quote(next_page)}")
            extra = [(b"retry-after", str(result.wait_s).encode())] if result.wait_s else []
            return await _json(send, result.status, {"detail": result.refusal}, extra)
        cookie = _session_cookie(result.token, int(self.gate.limits.max_s), secure)
        if wants_page:
            return await _redirect(send, "./" + next_page.lstrip("/"), [(b"set-cookie", cookie)])
        return await _json(send, 200, {"success": True}, [(b"set-cookie", cookie)])

    async def _logout(self, scope: dict, send: Send, client: str, secure: bool) -> None:
        await run_in_threadpool(self.gate.sign_out, _cookie(scope, COOKIE), client)
        return await _redirect(send, "login", [(b"set-cookie", _session_cookie("", 0, secure))])

    # --- files and uploads ------------------------------------------------------------------------------------
    def _may_read(self, path: str, identity: Identity) -> bool:
        """A file under exports/<owner>/ is its owner's (and an admin's); Gradio's own checks decide the rest."""
        # The ASGI path is decoded once already, as the route Gradio serves it sees it: decoding it again would judge
        # another path than the one served.
        wanted = path.split("file=", 1)[1] if "file=" in path else path.split("/file/", 1)[1]
        try:
            inside = Path(wanted).resolve().relative_to(self.exports_dir)
        except (ValueError, OSError, RuntimeError):
            return identity.name is not None
        if identity.name is None:
            return False
        return identity.admin or (bool(inside.parts) and inside.parts[0] == identity.name)

    async def _upload(self, scope: dict, receive: Receive, send: Send, identity: Identity) -> None:
        limit, refusal = await run_in_threadpool(self.upload_limit, identity)
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            return await _plain(send, 413, refusal)
        seen, stopped, started = 0, False, False

        async def counted() -> dict:
            nonlocal seen, stopped
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                stopped = True
                # Gradio's form parser deletes the files it has begun only on a form error, not when the client
                # leaves: raised here, inside its read loop, this removes what it wrote before the limit was passed.
                raise MultiPartException(refusal)
            return message

        async def quiet(message: dict) -> None:
            nonlocal started
            if stopped:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, quiet)
        except Exception:
            if not stopped:
                raise
        if stopped and not started:
            await _plain(send, 413, refusal)


def _login_page(query: dict) -> str:
    wait = query.get("wait", [""])[0]
    if wait.isdigit():
        message = f"Too many failed sign-ins: try again in {int(wait)} s."
    elif query.get("failed"):
        message = "Wrong name or password."
    else:
        message = ""
    shown = f'<p class="message" role="alert">{html.escape(message)}</p>' if message else ""
    return LOGIN_PAGE.replace("{message}", shown).replace(
        "{next}", html.escape(_safe_next(query.get("next", ["/"])[0]), quote=True))


def _safe_next(target: str) -> str:
    """Only a path of this studio: never another site ('//evil', 'https:', backslashes)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target[:500]


def _session_cookie(token: str, max_age_s: int, secure: bool) -> bytes:
    parts = [f"{COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={max_age_s}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode()


def _with_headers(send: Send, secure: bool, page: bool) -> Send:
    """Add the security headers to every response; buffer a page of the studio's (`page`) to allow exactly its
    inline scripts. Any other response, HTML or not, may run no script at all."""
    held: dict = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dict(BASE_HEADERS)]
            headers += BASE_HEADERS
            if secure:
                headers.append((b"strict-transport-security", b"max-age=31536000"))
            kind = dict((k.lower(), v) for k, v in headers).get(b"content-type", b"")
            if page and kind.startswith(b"text/html"):
                held["start"] = {**message, "headers": headers}
                return
            if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                headers.append((b"content-security-policy", FILE_POLICY if not kind.startswith(
                    (b"application/json", b"text/event-stream", b"text/css", b"application/javascript",
                     b"text/javascript")) else b"frame-ancestors 'none'"))
            await send({**message, "headers": headers})
            return
        if "start" in held and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            start = held.pop("start")
            policy = page_policy(inline_script_hashes(body)).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-security-policy"]
            await send({**start, "headers": [*headers, (b"content-security-policy", policy)]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _cookie(scope: dict, name: str) -> str | None:
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


async def _respond(send: Send, status: int, body: bytes, kind: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, extra: list | None = None) -> None:
    await _respond(send, 303, b"", b"text/plain", [(b"location", location.encode("latin-1")), *(extra or [])])


async def _plain(send: Send, status: int, text: str) -> None:
    await _respond(send, status, text.encode(), b"text/plain; charset=utf-8")


async def _json(send: Send, status: int, value: dict, extra: list | None = None) -> None:
    await _respond(send, status, json.dumps(value).encode(), b"application/json", extra)


async def _page(send: Send, status: int, text: str) -> None:
    await _respond(send, status, text.encode(), b"text/html; charset=utf-8")
