"""Scaling out: two authz-ledger replicas, each its own ledger shard, behind one Envoy cluster.

Runs envoy/envoy-two-replicas.yaml (ports rewritten to free ones) in the real Envoy, in front of two
``authz-ledger serve`` processes with their own data directory and origin. After N requests and a clean stop,
each shard verifies with its own key (and not with the other's), and the union of the shards is exactly the N
decisions Envoy acted on, named by the decision ids in Envoy's access log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, serve_process, stop_process
from tests.support.envoy_harness import ENVOY_DIR, start_envoy

pytestmark = pytest.mark.timeout(60)

TWO_REPLICAS_YAML = ENVOY_DIR / "envoy-two-replicas.yaml"
REPLICAS = ("authz-ledger.local/replica-1", "authz-ledger.local/replica-2")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz_ledger.cli", *args], capture_output=True, text=True, timeout=30, check=False
    )


def shard_entries(data_dir: Path) -> list[dict[str, Any]]:
    proc = cli("log", "--data-dir", str(data_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_two_replicas_behind_one_envoy_cluster_each_keep_a_verifiable_shard(tmp_path: Path) -> None:
    n, threads = 120, 4
    data_dirs = [tmp_path / f"replica-{i}" for i in (1, 2)]
    ports = [free_port(), free_port()]
    procs = []
    try:
        for data_dir, port, origin in zip(data_dirs, ports, REPLICAS, strict=True):
            sets = (f"ledger.origin={origin}", "audit.addr=127.0.0.1:0")
            procs.append(serve_process(data_dir, port, *sets, log=data_dir.with_suffix(".log")))
        with start_envoy(tmp_path / "envoy", ports, config=TWO_REPLICAS_YAML) as envoy:
            users = ["alice", "mallory", "bob", ""]  # allow, deny 403, allow, deny 401

            def one(i: int) -> int:
                user = users[i % len(users)]
                return envoy.request("GET", f"/people/{i}", {"x-user": user} if user else {}).status

            with ThreadPoolExecutor(threads) as pool:
                statuses = list(pool.map(one, range(n)))
            assert statuses == [[200, 403, 200, 401][i % 4] for i in range(n)]
            access = envoy.access_log(n)
    finally:
        exit_codes = [stop_process(p) for p in procs]
    assert exit_codes == [0] * len(procs), [d.with_suffix(".log").read_text()[-2000:] for d in data_dirs]

    shards: dict[str, list[dict[str, Any]]] = {}
    vkeys = {}
    for data_dir, origin in zip(data_dirs, REPLICAS, strict=True):
        vkey = cli("vkey", "--data-dir", str(data_dir))
        assert vkey.returncode == 0, vkey.stderr
        vkeys[origin] = vkey.stdout.strip()
        assert vkeys[origin].startswith(origin + "+")  # each shard signs under its own origin
        checkpoint = cli("checkpoint", "--data-dir", str(data_dir))
        assert checkpoint.stdout.splitlines()[0] == origin
        verified = cli("verify", "--data-dir", str(data_dir), "--vkey", vkeys[origin], "--json")
        report = json.loads(verified.stdout)
        assert verified.returncode == 0 and report["ok"], verified.stdout + verified.stderr
        shards[origin] = shard_entries(data_dir)
        assert report["size"] == len(shards[origin])
        assert [e["index"] for e in shards[origin]] == list(range(len(shards[origin])))

    # The shards are independent logs: one replica's key does not vouch for the other's checkpoints.
    crossed = cli("verify", "--data-dir", str(data_dirs[0]), "--vkey", vkeys[REPLICAS[1]], "--json")
    assert crossed.returncode != 0 and not json.loads(crossed.stdout)["ok"]

    # Round robin: both replicas decided some of the requests...
    assert all(len(entries) > 0 for entries in shards.values()), {o: len(e) for o, e in shards.items()}
    # ...and the union of the shards is exactly the requests sent, each decision in exactly one shard.
    union = [e for entries in shards.values() for e in entries]
    assert len(union) == n
    by_id = {e["decision_id"]: e for e in union}
    assert len(by_id) == n
    assert {a["decision_id"] for a in access} == set(by_id)
    for a in access:
        e = by_id[a["decision_id"]]
        assert (e["method"], e["path"], e["http_status"]) == (a["method"], a["path"], a["status"])
