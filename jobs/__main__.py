"""`python -m jobs`: see jobs/cli/main.py and docs/api.md ("CLI")."""

import sys

from jobs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
