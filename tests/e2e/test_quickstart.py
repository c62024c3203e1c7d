"""envoy/quickstart.sh, run as a user runs it: ``bash envoy/quickstart.sh``, real authz-ledger and real Envoy.

Its ports are set to free ones through its environment variables and its tools are found next to the Python
running the tests (as next to .venv/bin/python made by tests/run.sh). What it prints is checked against the
ledger it leaves behind, and everything it started must be gone when it returns.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.timeout(60)

QUICKSTART = ROOT / "envoy" / "quickstart.sh"
PORT_VARS = ("AUTHZ", "AUDIT", "METRICS", "ENVOY", "ADMIN")


def run_quickstart(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("QUICKSTART_", "AUTHZ_LEDGER"))}
    environ |= {f"QUICKSTART_{name}_PORT": str(free_port()) for name in PORT_VARS}
    environ |= {"PYTHON": sys.executable, "TMPDIR": str(tmp_path), **env}
    return subprocess.run(
        ["bash", str(QUICKSTART)], capture_output=True, text=True, timeout=50, env=environ, cwd=tmp_path, check=False
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_shows_an_allowed_and_a_denied_request_their_ledger_entries_and_verifies(tmp_path: Path) -> None:
    proc = run_quickstart(tmp_path, QUICKSTART_KEEP="1")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "\nquickstart: OK\n" in out

    # Both HTTP answers, as Envoy gave them.
    allowed, denied = out.split("== allowed")[1].split("== denied")
    assert "HTTP 200 OK" in allowed and "x-upstream-saw-authz-user: alice" in allowed and "body: ok" in allowed
    assert "HTTP 403 Forbidden" in denied and "body: unknown user: mallory" in denied
    [allowed_id] = re.findall(r"x-decision-id: (\S+)", allowed)

    # The join: each Envoy access log line is followed by the ledger entry with the same decision id.
    envoy_lines = re.findall(r"envoy: +GET /api/items -> (\d+) .* decision_id (\S+)", out)
    ledger_lines = re.findall(r"ledger: #(\d+) (\w+) (\d+) +GET /api/items +x-user=(\w+) .* decision_id (\S+)", out)
    assert [s for s, _ in envoy_lines] == ["200", "403"]
    assert ledger_lines == [
        ("0", "allow", "200", "alice", envoy_lines[0][1]),
        ("1", "deny", "403", "mallory", envoy_lines[1][1]),
    ]
    assert envoy_lines[0][1] == allowed_id
    assert "2 access log lines, 2 ledger entries, 2 joined" in out
    assert re.search(r"OK: .*: 2 entries, \d+ batches, [1-9]\d* signed checkpoints verified", out)

    # Everything it started is stopped: the PIDs are gone and the ports are free.
    [(envoy_pid, authz_pid)] = re.findall(r"stopping Envoy \(pid (\d+)\) and authz-ledger \(pid (\d+)\)", out)
    for pid in (int(envoy_pid), int(authz_pid)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    [work] = re.findall(r"working directory kept: (\S+)", out)
    envoy_yaml = (Path(work) / "envoy.yaml").read_text()
    ports = [int(p) for p in re.findall(r"port_value: (\d+)", envoy_yaml)]
    assert len(ports) == 3 and not any(listening(p) for p in ports)

    # The ledger it leaves behind says the same, checked independently of what it printed.
    data_dir = Path(work) / "ledger"
    [vkey] = re.findall(r"== authz-ledger verify --data-dir \S+ --vkey (\S+)", out)
    cli = [sys.executable, "-m", "authz_ledger.cli"]
    verify = subprocess.run(
        [*cli, "verify", "--data-dir", str(data_dir), "--vkey", vkey, "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert verify.returncode == 0 and json.loads(verify.stdout)["size"] == 2, verify.stdout + verify.stderr
    log = subprocess.run(
        [*cli, "log", "--data-dir", str(data_dir), "--json"], capture_output=True, text=True, timeout=30, check=True
    )
    entries = [json.loads(line) for line in log.stdout.splitlines()]
    assert [(e["decision_id"], e["outcome"], e["http_status"]) for e in entries] == [
        (envoy_lines[0][1], "allow", 200),
        (envoy_lines[1][1], "deny", 403),
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("port", "is in use; choose others with QUICKSTART_*_PORT"),
        ("envoy", "no-such-envoy is not an executable"),
    ],
    ids=["a port in use stops it before anything starts", "a missing envoy binary is named"],
)
def test_quickstart_fails_loudly_and_leaves_nothing_behind(tmp_path: Path, setup: str, message: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if setup == "port":
            env = {"QUICKSTART_ENVOY_PORT": str(busy.getsockname()[1])}
        else:
            env = {"ENVOY": str(tmp_path / "no-such-envoy")}
        proc = run_quickstart(tmp_path, **env)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "serving ext_authz" not in proc.stdout
    assert not list(tmp_path.glob("authz-ledger-quickstart.*"))  # its temporary directory is removed
