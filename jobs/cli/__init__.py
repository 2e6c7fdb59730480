"""`python -m jobs`: the studio's actions from a shell, as the operator on the studio's machine (the data dir, full
access) or as a person against a running studio (`--url`: signed in, through the same API endpoints the browser's
actions have, so the same checks apply). docs/api.md lists the verbs, their endpoints and which mode each needs."""
