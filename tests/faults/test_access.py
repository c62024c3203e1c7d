"""Access: nothing the service listens on is reachable from another host by default; readable keys are refused.

* A real ``authz-ledger serve`` on the default listen hosts (free ports, so concurrent test runs do not collide):
  every socket the process listens on is bound to a loopback address, and connecting to the same ports on this
  machine's non-loopback address is refused, while loopback works: the Check listener, ``/metrics`` and the audit
  API (``authzledger.v1.Ledger``).
* A signing key (``--key`` or ``<data_dir>/keys/signing.key``) or the redaction key that group or others can
  read stops ``serve`` with exit 1 and a message naming the file and the ``chmod`` that fixes it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from authz_ledger import config
from tests.conftest import TEST_DEFAULTS, free_port, serve_process, stop_process


def non_loopback_ipv4() -> str:
    """An IPv4 address of this machine that is not loopback (fails the test when there is none)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            addr = fields[fields.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(addr).is_loopback:
                return addr
    # Without iproute2: the source address the kernel would use to reach a documentation address.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        addr = s.getsockname()[0]
    if ipaddress.ip_address(addr).is_loopback:
        pytest.fail("this machine has no non-loopback IPv4 address to test reachability from")
    return str(addr)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process ``pid`` listens on (/proc/<pid>/fd + /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc/net prints the address as host-order 32-bit words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
            found.append((str(ipaddress.ip_address(raw)), int(hex_port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # gRPC listens on 127.0.0.1 through a v6 socket: ::ffff:127.0.0.1
    return ip.is_loopback


def test_check_metrics_and_audit_listeners_are_loopback_only_by_default(tmp_path: Path) -> None:
    defaults = config.load(environ={})
    hosts = {
        key: getattr(defaults, key).addr.rpartition(":")[0] for key in ("server", "metrics", "audit")
    }  # the default host of each listener; the test keeps it and picks free ports
    assert all(ipaddress.ip_address(h).is_loopback for h in hosts.values()), hosts
    assert hosts["server"] == "127.0.0.1"  # serve_process passes --addr 127.0.0.1:<port>
    assert defaults.audit.enabled and defaults.metrics.enabled
    port, metrics_port, audit_port = free_port(), free_port(), free_port()
    proc = serve_process(
        tmp_path / "data",
        port,
        f"metrics.addr={hosts['metrics']}:{metrics_port}",
        f"audit.addr={hosts['audit']}:{audit_port}",
    )
    try:
        listening = listening_addresses(proc.pid)
        assert {p for _, p in listening} >= {port, metrics_port, audit_port}, listening
        exposed = [(a, p) for a, p in listening if not is_loopback(a)]
        assert not exposed, f"listening beyond loopback by default: {exposed}"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200
        for p in (port, audit_port):
            with socket.create_connection(("127.0.0.1", p), 5):
                pass
        other = non_loopback_ipv4()
        for p in (port, metrics_port, audit_port):
            with pytest.raises(ConnectionRefusedError), socket.create_connection((other, p), 3):
                pass
    finally:
        assert stop_process(proc) == 0


def _serve_once(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "authz_ledger.cli", "serve", "--addr", f"127.0.0.1:{free_port()}"]
    argv += ["--data-dir", str(data_dir), *extra]
    for item in TEST_DEFAULTS:
        argv += ["--set", item]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _keygen(path: Path, origin: str) -> None:
    from authz_ledger import keys

    keys.write_signing_key(path, origin)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_signing_key_given_with_key_that_others_can_read_stops_serve(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "signing.key"
    _keygen(key, "authz-ledger.test/access")
    key.chmod(mode)
    proc = _serve_once(tmp_path / "data", "--key", str(key), "--set", "ledger.origin=authz-ledger.test/access")
    assert proc.returncode == 1, proc.stderr
    assert "serving ext_authz" not in proc.stdout
    assert str(key) in proc.stderr and f"chmod 600 {key}" in proc.stderr, proc.stderr
    assert f"{mode:04o}" in proc.stderr


@pytest.mark.parametrize("name", ["signing.key", "redaction.key"])
def test_a_key_in_the_data_dir_that_others_can_read_stops_serve(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    port = free_port()
    stop_process(serve_process(data, port))  # creates both keys, mode 0600
    key = data / "keys" / name
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    proc = _serve_once(data)
    assert proc.returncode == 1, proc.stderr
    assert "serving ext_authz" not in proc.stdout
    assert f"chmod 600 {key}" in proc.stderr, proc.stderr
    key.chmod(0o600)
    stop_process(serve_process(data, free_port()))  # fixed as told: it starts again
