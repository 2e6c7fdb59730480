"""Account tab: who is signed in, the disk their datasets take against their limits, their sessions, their hub token
(kept encrypted, never shown back), their API key for the OpenAI-compatible endpoint (shown once, kept hashed), a new
password (which ends their other sessions), signing out; for admins, the
audit log. Without accounts it says so: the one local person has nothing to sign in to."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app.account import credential_panel
from app.account.credential_panel import CredentialPanel
from app.account.users_cli import password_problem
from app.adapters import tab as adapters_tab
from app.views import human_size
from app.web.errors import user_error
from app.web.gate import COOKIE as SESSION_COOKIE
from app.web.gate import PASSWORDS, Gate
from app.web.safe_text import SafeMarkdown
from jobs import hub_access, tracker_keys
from jobs import secrets as secret_store
from jobs.data.quota import allowance
from jobs.studio import Studio
from storage import audit_repo, sessions_repo, users_repo
from storage.access import current_person

AUDIT_COLUMNS = ["when (UTC)", "who", "what", "target", "from", "detail"]
AUDIT_ROWS = 200


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def my_account(studio: Studio) -> dict:
    """The person asking: name, admin, disk their datasets take and what is left, sessions, hub token hint."""
    person = current_person()
    left = allowance(studio, person)
    with studio.db.read() as session:
        accounts = users_repo.accounts_exist(session)
        signed_in = len(sessions_repo.sessions_of(session, person.name)) if person and accounts else 0
    return {"name": person.name if person else None, "admin": bool(person and person.admin), "accounts": accounts,
            "datasets_left": left.datasets_left, "max_datasets": left.max_datasets,
            "storage_used_bytes": left.max_storage_bytes - left.storage_left_bytes,
            "max_storage_bytes": left.max_storage_bytes, "max_upload_bytes": left.max_file_bytes,
            "sessions": signed_in, "hub_token": hub_access.hub_token_status(studio),
            "api_key": api_key_status(studio), "wandb_key": tracker_keys.wandb_key_status(studio)}


def set_wandb_key(studio: Studio, key: str) -> dict:
    """Keep my own W&B API key (encrypted; never shown back) for runs with report_to wandb."""
    try:
        return tracker_keys.set_wandb_key(studio, key)
    except tracker_keys.TrackerKeyError as error:
        raise user_error(str(error)) from None


def clear_wandb_key(studio: Studio) -> dict:
    try:
        return tracker_keys.clear_wandb_key(studio)
    except tracker_keys.TrackerKeyError as error:
        raise user_error(str(error)) from None


def wandb_key_status(studio: Studio) -> dict:
    """Whether I keep a W&B API key (`hint`: at most its last 4 characters)."""
    return tracker_keys.wandb_key_status(studio)


def api_key_status(studio: Studio) -> dict:
    """Whether the person has an API key (`stored`) and its `hint` (at most its last 4 characters)."""
    hint = secret_store.secret_hint(studio, secret_store.API_KEY)
    return {"stored": hint is not None, "hint": hint}


def create_api_key(studio: Studio) -> dict:
    """A new API key for the OpenAI-compatible endpoint (/v1), replacing the person's old one at once: `key` is shown
    this once (only its hash is kept). Without accounts the endpoint needs no key, so none is made."""
    person = current_person()
    with studio.db.read() as session:
        accounts = users_repo.accounts_exist(session)
    if not accounts:
        raise user_error("api key: without accounts the studio listens on 127.0.0.1 only and its /v1 endpoint "
                         "needs no key (send any)")
    key = secret_store.new_api_key(studio)
    with studio.db.write() as session:
        audit_repo.record(session, "api_key_created", person.name, person.name)
    return {"key": key, **api_key_status(studio)}


def revoke_api_key(studio: Studio) -> dict:
    """Revoke the person's API key: requests with it are refused (401) from now on."""
    person = current_person()
    if secret_store.drop_secret(studio, secret_store.API_KEY):
        with studio.db.write() as session:
            audit_repo.record(session, "api_key_revoked", person.name if person else None,
                              person.name if person else None)
    return api_key_status(studio)


def change_password(studio: Studio, gate: Gate, current: str, new: str, again: str,
                    request: gr.Request | None = None) -> str:
    """Set a new password: the current one must match; every other session of the person ends."""
    person = current_person()
    with studio.db.read() as session:
        user = users_repo.get_user(session, person.name) if person is not None else None
    if user is None:
        raise user_error("password: without accounts there is no password to change (`python -m app users add`)")
    problems = []
    if not gate.check_password(user.password_hash, current or ""):
        problems.append("current password: does not match")
    if problem := password_problem(new or ""):
        problems.append(problem.replace("password:", "new password:"))
    elif new != again:
        problems.append("new password again: the two new passwords differ")
    if problems:
        raise user_error("\n".join(problems))
    keep = request.request.cookies.get(SESSION_COOKIE) if request is not None and request.request else None
    with studio.db.write() as session:
        users_repo.set_password_hash(session, user.name, PASSWORDS.hash(new))
        ended = sessions_repo.end_all(session, user.name, keep_token=keep)
        audit_repo.record(session, "password_change", user.name, user.name, detail={"sessions_ended": ended})
    return f"Password changed; {ended} other session(s) ended."


def audit_log(studio: Studio, limit: int = AUDIT_ROWS) -> list[dict]:
    """The newest audit events (admins only)."""
    person = current_person()
    if person is not None and not person.admin:
        raise user_error("audit: only an admin reads the audit log")
    with studio.db.read() as session:
        events = audit_repo.recent(session, max(1, min(int(limit or AUDIT_ROWS), 10_000)))
    return [{"at": e.created_at.isoformat(timespec="seconds"), "actor": e.actor, "action": e.action,
             "target": e.target, "client": e.client, "detail": e.detail} for e in events]


def account_text(studio: Studio) -> str:
    account = my_account(studio)
    if not account["accounts"]:
        return ("No accounts: the studio runs for one person on 127.0.0.1 and needs no sign-in. "
                "`python -m app users add NAME --admin` adds the first account.")
    token = account["hub_token"]
    hub = f"a hub token ending {token['hint']} is stored" if token.get("stored") else "no hub token stored"
    return (f"Signed in as **{account['name']}**{' (admin)' if account['admin'] else ''} · "
            f"[sign out](logout)\n\n"
            f"Datasets take {human_size(account['storage_used_bytes'])} of "
            f"{human_size(account['max_storage_bytes'])}; {account['datasets_left']} more dataset(s) allowed; "
            f"uploads up to {human_size(account['max_upload_bytes'])}. "
            f"{account['sessions']} signed-in session(s). {hub[0].upper()}{hub[1:]}. "
            + (f"An API key ending {account['api_key']['hint']} is active." if account["api_key"]["stored"]
               else "No API key.")
            + (f" A W&B key ending {account['wandb_key']['hint']} is stored." if account["wandb_key"]["stored"]
               else " No W&B key."))


def audit_frame(studio: Studio) -> pd.DataFrame:
    person = current_person()
    if person is not None and not person.admin:
        return pd.DataFrame(columns=AUDIT_COLUMNS)
    rows = [[e["at"], e["actor"] or "(operator)", e["action"], e["target"] or "", e["client"] or "",
             ", ".join(f"{k}={v}" for k, v in (e["detail"] or {}).items())] for e in audit_log(studio)]
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


CREDENTIAL_PANELS = (
    CredentialPanel("Your hub token (for pushing to the Hugging Face hub)", "Hub token",
                    "kept encrypted; never shown back, only its last characters", "token", "Hub token",
                    adapters_tab.set_hub_token, adapters_tab.clear_hub_token),
    CredentialPanel("Your Weights & Biases key (for runs with Experiment tracking: wandb)", "W&B API key",
                    "kept encrypted; never shown back; only your own runs' training reads it", "W&B key", "W&B key",
                    set_wandb_key, clear_wandb_key),
)
"""The per-person credentials, one panel each, in the tab's order (app/account/credential_panel.py)."""


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, tab: gr.Tab, app: gr.Blocks) -> None:
    gate = Gate(studio)
    summary = SafeMarkdown(elem_id="account-summary")
    with gr.Accordion("Change your password", open=False):
        with gr.Row():
            current = gr.Textbox(label="Current password", type="password")
            new = gr.Textbox(label="New password", type="password", info="at least 10 characters")
            again = gr.Textbox(label="New password again", type="password")
        change = gr.Button("Change password", elem_id="change-password")
    connect_panels = [credential_panel.build(studio, panel, account_text) for panel in CREDENTIAL_PANELS]
    with gr.Accordion("Your API key (the OpenAI-compatible endpoint at /v1, docs/api.md)", open=False):
        with gr.Row():
            create_key = gr.Button("Create API key", elem_id="create-api-key", scale=1)
            revoke_key = gr.Button("Revoke API key", elem_id="revoke-api-key", scale=1)
        new_key = gr.Textbox(label="Your new API key: copy it now, it is not shown again", interactive=False,
                             visible=False, elem_id="new-api-key")
    status = SafeMarkdown(elem_id="account-status")
    with gr.Accordion("Audit log (admins)", open=False):
        audit = gr.Dataframe(pd.DataFrame(columns=AUDIT_COLUMNS), interactive=False, wrap=True,
                             elem_id="audit-log")

    def refresh():
        return account_text(studio), audit_frame(studio)

    def on_change(old, wanted, repeated, request: gr.Request):
        return change_password(studio, gate, old, wanted, repeated, request), "", "", ""

    def on_create_key():
        made = create_api_key(studio)
        return ("API key created; any older one no longer works.", gr.update(value=made["key"], visible=True),
                account_text(studio))

    def on_revoke_key():
        revoke_api_key(studio)
        return "API key revoked.", gr.update(value="", visible=False), account_text(studio)

    private = dict(api_visibility="private")
    for trigger in (app.load, tab.select):
        trigger(refresh, None, [summary, audit], **private)
    change.click(on_change, [current, new, again], [status, current, new, again], **private)
    for connect in connect_panels:
        connect(status, summary)
    create_key.click(on_create_key, None, [status, new_key, summary], **private)
    revoke_key.click(on_revoke_key, None, [status, new_key, summary], **private)
