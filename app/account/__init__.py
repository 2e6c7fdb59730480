"""The Account tab (`tab`) and the operator's `python -m app users` command (`users_cli`)."""
