#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian's `chromium` and the Python `playwright` driver.
#
#   bash tests/browser_support/install.sh [PYTHON]      # PYTHON defaults to .venv/bin/python
#
# The browser comes from Debian's package (apt-get, needs root); Playwright drives it through
# `executable_path=/usr/bin/chromium`. We never run `playwright install`: no browser is downloaded
# from the web. Safe to run repeatedly: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${1:-.venv/bin/python}"
PLAYWRIGHT_SPEC="playwright==1.65.2"

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: chromium is missing and this is not root; run: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    echo "install.sh: apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version 2>/dev/null  # (its launcher script prints a harmless shell warning)

if ! "$PYTHON" -c "import playwright" >/dev/null 2>&1; then
    echo "install.sh: pip install $PLAYWRIGHT_SPEC"
    "$PYTHON" -m pip install -q "$PLAYWRIGHT_SPEC"
fi
"$PYTHON" -c "from importlib.metadata import version; print('playwright', version('playwright'))"
