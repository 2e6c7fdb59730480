#!/usr/bin/env bash
# Refresh every picture in docs/screenshots: the browser tests walk the studio (train, runs, compare, adapters, chat,
# datasets, blind votes, every tab at 1400 px) and save each step here as they pass. Needs Chromium (see README).
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDIO_SCREENSHOTS_DIR=docs/screenshots python -m pytest -q -p no:cacheprovider tests/app/test_browser.py "$@"
