#!/usr/bin/env bash
# Creates .venv/ in the repository root and installs sisr into it (editable), building the compiled
# selective-scan kernel when a C++ compiler is available. Pass --test to add the test tools.
set -euo pipefail
cd "$(dirname "$0")"
extras=""
if [[ "${1:-}" == "--test" ]]; then extras="[test]"; fi
python3 -m venv .venv
# torch first, pinned: the CPU wheel. The package is then built against it (no build isolation, which
# would fetch another torch into a throwaway environment).
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0" "setuptools>=64" wheel ninja
.venv/bin/pip install --quiet --disable-pip-version-check --no-build-isolation -e ".${extras}"
echo "sisr is installed in $(pwd)/.venv"
