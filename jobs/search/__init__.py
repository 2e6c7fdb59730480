"""Budgeted search: Optuna (TPE, with successive-halving or Hyperband pruning) choosing spec values for trial jobs
that run through the ordinary queue, stopping the losers early on held-out loss (docs/architecture.md "Search")."""
