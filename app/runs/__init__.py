"""The Runs tab: the queue and runs table (`tab`), one run in detail (`run_view`), several compared
(`compare_panel`), and their charts."""
