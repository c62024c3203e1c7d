"""Shared fixtures: real LMDB ledgers in temp dirs, keys, and helpers to locate real tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz_ledger import config, note, server
from authz_ledger.store import Store
from authz_ledger.writer import Durability, LedgerWriter, WriterOptions

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ORIGIN = "authz-ledger.test/log"


@pytest.fixture
def signer() -> note.Signer:
    return note.generate_signer(ORIGIN)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ledger", map_size=64 << 20)
    yield s
    s.close()


def make_writer(store: Store, signer: note.Signer, **options: object) -> LedgerWriter:
    opts = {"durability": Durability.SYNC, "checkpoint_interval_s": 3600.0, **options}
    return LedgerWriter(store, [signer], signer.name, WriterOptions(**opts))  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """A real binary installed by the test setup; fail loudly when it is missing."""
    candidates = [Path(sys.executable).parent / name, shutil.which(name)]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    pytest.fail(f"required tool {name!r} is not installed; run the README's test command (tests/run.sh)")


def opa_binary() -> str:
    cache = Path(os.environ.get("AUTHZ_LEDGER_CACHE", Path.home() / ".cache" / "authz-ledger"))
    opa = cache / "opa" / "bin" / "opa"
    if not opa.exists():
        # Build it now (cached); a failure is a loud test failure, never a skip.
        proc = subprocess.run(
            ["bash", str(ROOT / "tests" / "tools" / "build-opa.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not opa.exists():
            pytest.fail(f"cannot build OPA: {proc.stderr[-3000:]}")
    return str(opa)


StartService = Callable[..., server.Running]


@pytest.fixture
def authz_service(tmp_path: Path) -> Iterator[StartService]:
    """Start authz-ledger in-process on a free 127.0.0.1 port: ``authz_service(*sets, policy=dir)``.

    Each call gets its own data directory; every service started is stopped (SIGTERM sequence) at teardown.
    """
    started: list[server.Running] = []

    def start(*sets: str, policy: Path | None = None, data_dir: Path | None = None) -> server.Running:
        overrides: dict[str, object] = {
            "server.addr": f"127.0.0.1:{free_port()}",
            "ledger.data_dir": str(data_dir or tmp_path / f"data-{len(started)}"),
        }
        if policy is not None:
            overrides["policy.source"] = str(policy)
        cfg = config.load(
            sets=["server.drain_seconds=0", "server.grace_seconds=1", "policy.embedded.workers=1", *sets],
            environ={},
            overrides=overrides,
        )
        running = server.start(cfg)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


def write_policy(directory: Path, rego: str) -> Path:
    """A one-file embedded policy directory (``package envoy.authz``, Rego v1) for a test."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.rego").write_text("package envoy.authz\n\nimport rego.v1\n\n" + rego)
    return directory
