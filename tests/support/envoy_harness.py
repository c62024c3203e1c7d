"""Running the real Envoy on the repository's envoy/*.yaml files, for every test that needs it.

A config is run as written, only its admin, listener and authz endpoint ports replaced by free ones. Envoy
counts as up once its admin ``/ready`` says LIVE and its gRPC health check has marked every authz endpoint
healthy; if it cannot get there the test fails loudly with Envoy's log (never a skip).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# Registers every typed_config message the envoy/*.yaml files name, so their Any fields resolve in ParseDict.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from tests.conftest import ROOT, free_port, tool
from tests.support.waits import wait_until

ENVOY_DIR = ROOT / "envoy"
ENVOY_YAML = ENVOY_DIR / "envoy.yaml"
AUTHZ_CLUSTER = "authz-ledger"
LISTENER = "ingress"
STARTUP_TIMEOUT_S = 20.0


def is_bootstrap(doc: Any) -> bool:
    """An Envoy bootstrap (as opposed to the Kubernetes / Istio / authz-ledger YAML kept under envoy/)."""
    return isinstance(doc, dict) and ("static_resources" in doc or "admin" in doc)


def load_bootstrap(path: Path) -> bootstrap_pb2.Bootstrap:
    """Parse a YAML bootstrap into Envoy's own proto; unknown fields or types raise ParseError."""
    return json_format.ParseDict(yaml.safe_load(path.read_text()), bootstrap_pb2.Bootstrap())


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: Envoy's full config checks without binding anything."""
    return subprocess.run(
        [tool("envoy"), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def authz_endpoints(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The socket addresses of the authz cluster's endpoints, in file order (mutable views into ``doc``)."""
    [cluster] = [c for c in doc["static_resources"]["clusters"] if c["name"] == AUTHZ_CLUSTER]
    return [
        lb["endpoint"]["address"]["socket_address"]
        for group in cluster["load_assignment"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]


def envoy_config(
    path: Path = ENVOY_YAML, *, admin_port: int, listener_port: int, authz_ports: Sequence[int]
) -> dict[str, Any]:
    """``path`` with its admin, listener and authz endpoint ports replaced; nothing else changes."""
    doc = yaml.safe_load(path.read_text())
    doc["admin"]["address"]["socket_address"]["port_value"] = admin_port
    [listener] = [lst for lst in doc["static_resources"]["listeners"] if lst["name"] == LISTENER]
    listener["address"]["socket_address"]["port_value"] = listener_port
    endpoints = authz_endpoints(doc)
    assert len(endpoints) == len(authz_ports), f"{path} has {len(endpoints)} authz endpoints, not {len(authz_ports)}"
    for address, port in zip(endpoints, authz_ports, strict=True):
        address["port_value"] = port
    return doc


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class Envoy:
    proc: subprocess.Popen[bytes]
    admin_port: int
    port: int
    stdout: Path
    stderr: Path

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def access_log(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait for ``count`` access log lines (flushed every 50 ms, see start_envoy); fail on more."""
        lines = wait_until(
            lambda: [ln for ln in self.stdout.read_text().splitlines() if ln.startswith("{")],
            lambda seen: len(seen) >= count,
            timeout=timeout,
            interval=0.05,
            message=f"expected {count} access log lines",
        )
        assert len(lines) == count, f"expected {count} access log lines, got {len(lines)}"
        return [json.loads(ln) for ln in lines]


def _wait_for(envoy: Envoy, what: str, ok: Callable[[], bool]) -> None:
    def observe() -> bool:
        if envoy.proc.poll() is not None:
            pytest.fail(f"envoy exited with {envoy.proc.returncode} while waiting for {what}:\n{envoy.logs()}")
        return ok()

    wait_until(
        observe,
        timeout=STARTUP_TIMEOUT_S,
        interval=0.05,
        message=lambda: f"envoy: no {what}:\n{envoy.logs()}",
        ignoring=OSError,  # admin not listening yet
    )


@contextmanager
def start_envoy(workdir: Path, authz_port: int | Sequence[int], config: Path = ENVOY_YAML) -> Iterator[Envoy]:
    """Run the real Envoy on ``config`` (fresh ports) until every authz endpoint is healthy.

    ``authz_port``: the port of the authz cluster's single endpoint, or one port per endpoint in file order.
    """
    ports = [authz_port] if isinstance(authz_port, int) else list(authz_port)
    workdir.mkdir(parents=True, exist_ok=True)
    admin_port, listener_port = free_port(), free_port()
    cfg_path = workdir / "envoy.yaml"
    cfg_path.write_text(
        yaml.safe_dump(envoy_config(config, admin_port=admin_port, listener_port=listener_port, authz_ports=ports))
    )
    stdout, stderr = workdir / "envoy.stdout", workdir / "envoy.stderr"
    argv = [
        tool("envoy"), "-c", str(cfg_path), "--disable-hot-restart", "--concurrency", "2", "-l", "warning",
        # Access log lines reach stdout within 50 ms instead of Envoy's default 10 s flush interval.
        "--file-flush-interval-msec", "50",
    ]  # fmt: skip
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
    envoy = Envoy(proc, admin_port, listener_port, stdout, stderr)
    try:
        _wait_for(envoy, "/ready LIVE", lambda: envoy.admin("/ready") == (200, "LIVE\n"))
        for port in ports:
            healthy = f"{AUTHZ_CLUSTER}::127.0.0.1:{port}::health_flags::healthy"
            _wait_for(envoy, f"healthy authz endpoint ({healthy})", lambda h=healthy: h in envoy.admin("/clusters")[1])
        yield envoy
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
