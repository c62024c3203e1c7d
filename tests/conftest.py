"""Shared fixtures: real LMDB ledgers in temp dirs, keys, and helpers to locate real tools."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import settings

from authz_ledger import config, server
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions
from authz_ledger.tlog import note
from tests.support.waits import wait_until

# CI runs the property tests on a fixed sequence of examples, so that a landing does not depend on the luck of the
# draw; developers' runs draw new examples every time (that is how they find new bugs).
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
"""Published test vectors and recordings, copied into the repository (tests/vectors/SOURCES.md)."""
ORIGIN = "authz-ledger.test/log"
# Every service a test starts: fast shutdown, one evaluator process, side listeners on free ports.
TEST_DEFAULTS = (
    "server.drain_seconds=0",
    "server.grace_seconds=1",
    "policy.embedded.workers=1",
    "metrics.addr=127.0.0.1:0",
    "audit.addr=127.0.0.1:0",
)


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


def wait_for_opa(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30) -> None:
    """Return once the OPA server at ``url`` answers /health; fail loudly (with its log) if it never does."""

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"OPA exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return bool(response.status == 200)

    try:
        wait_until(answers, timeout=timeout, interval=0.05, message="OPA did not start", ignoring=OSError)
    except AssertionError as still_starting:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process ignores SIGKILL until it runs again
        proc.kill()
        proc.wait(10)
        pytest.fail(f"{still_starting}: {log.read_text()[-2000:]}")


def pause_process(pid: int, timeout: float = 5) -> None:
    """SIGSTOP ``pid`` and return only once every one of its threads is stopped.

    The kernel stops a running thread asynchronously: a request sent right after ``kill`` can still be answered
    by a thread that has not stopped yet, which is not the "server paused" case a test means to exercise.
    """
    os.kill(pid, signal.SIGSTOP)

    def thread_states() -> list[str]:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # a thread that exited meanwhile
            states.append(stat[stat.rindex(")") + 2])
        return states

    wait_until(
        thread_states,
        lambda states: bool(states) and all(state in "tT" for state in states),
        timeout=timeout,
        interval=0.001,
        message=f"process {pid} did not stop (thread states)",
    )


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
            sets=[*TEST_DEFAULTS, *sets],
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


def serve_process(
    data_dir: Path,
    port: int,
    *sets: str,
    policy: Path | None = None,
    log: Path | None = None,
    keys: Sequence[Path] = (),
) -> subprocess.Popen[str]:
    """``authz-ledger serve`` as its own process, returned once it says it is serving.

    ``sets`` are ``key=value`` overrides. Its log goes to a file (a pipe nobody reads could fill and stall it):
    ``log`` or ``<data_dir>.log``.
    """
    argv = [
        sys.executable,
        "-m",
        "authz_ledger.cli",
        "serve",
        "--addr",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
    ]
    if policy is not None:
        argv += ["--policy", str(policy)]
    for key in keys:
        argv += ["--key", str(key)]
    for item in (*TEST_DEFAULTS, *sets):
        argv += ["--set", item]
    log = log or data_dir.with_name(data_dir.name + ".log")
    with log.open("a") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    line = proc.stdout.readline() if proc.stdout else ""
    if "serving ext_authz v3" not in line:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"authz-ledger serve did not start: {line!r}\n{log.read_text()[-3000:]}")
    return proc


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Send ``sig`` and wait; the exit code, or None (after a SIGKILL) if it did not exit in time."""
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        code = None
    if proc.stdout:
        proc.stdout.close()
    return code
