#!/usr/bin/env bash
# Regenerate the quarantined Python code in server/authz_ledger/_proto from proto/ (grpcio-tools).
# protoc writes imports relative to the proto root ("from authzledger.v1 import ..."); they are rewritten to the
# package they are quarantined in, so nothing has to be put on sys.path. tests/test_proto.py checks the
# committed code is what this script produces.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-server/authz_ledger/_proto}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
"$PYTHON" -m grpc_tools.protoc -Iproto --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  $(cd proto && find . -name '*.proto' | sort | sed 's|^\./|proto/|')
find "$OUT" -name '*.py' -o -name '*.pyi' | while read -r f; do
  sed -i -E 's/^from authzledger\.([a-z0-9_.]+) import /from authz_ledger._proto.authzledger.\1 import /' "$f"
done
for d in "$OUT" "$OUT/authzledger" "$OUT/authzledger/v1"; do
  [ -f "$d/__init__.py" ] || : > "$d/__init__.py"
done
