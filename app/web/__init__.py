"""The web process's shared pieces: the Blocks (`server`), the public API (`api`), the front door (`gate`, `guard`),
every handler run as its person (`accounts`), text made safe for a page (`safe_text`), errors and notices."""
