"""The README's "Try it", console and auditor's lines, run exactly as written against the service its first
command starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, stop_process
from tests.support.waits import wait_until

README = (ROOT / "README.md").read_text()


def sh_lines(heading: str) -> list[str]:
    """The lines of the first sh block under a README heading."""
    section = README.split(f"## {heading}", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, f"the {heading} section has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def try_it_lines() -> list[str]:
    return sh_lines("Try it")


def start_default_service(tmp_path: Path) -> tuple[Path, dict[str, str], subprocess.Popen[str]]:
    """``authz-ledger serve`` with no arguments, HOME in tmp_path (~/.local/share/authz-ledger: a fresh ledger);
    returns the venv's bin directory (the README's .venv/bin), the environment and the process, serving."""
    # The first command's venv is .venv at the repository root; the test command may use another one.
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, HOME=str(tmp_path))
    serve = subprocess.Popen(
        [str(venv_bin / "authz-ledger"), "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("w"),
        text=True,
    )
    first = serve.stdout.readline() if serve.stdout else ""
    if "serving ext_authz v3" not in first:
        stop_process(serve)
        raise AssertionError((tmp_path / "serve.log").read_text()[-2000:])
    return venv_bin, env, serve


def test_every_try_it_line_runs_as_written_against_the_default_service(tmp_path: Path) -> None:
    venv_bin, env, serve = start_default_service(tmp_path)
    try:
        codes = []
        outputs = []
        for line in try_it_lines():
            command = line.replace(".venv/bin/", f"{venv_bin}/")
            proc = subprocess.run(
                ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
            )
            codes.append(proc.returncode)
            outputs.append(proc.stdout + proc.stderr)
    finally:
        assert stop_process(serve) == 0
    # alice is allowed, bob may not DELETE orders (exit 1 = denied), then health, log and verify succeed.
    assert codes == [0, 1, 0, 0, 0], list(zip(try_it_lines(), codes, outputs, strict=True))
    assert outputs[0].startswith("allowed (HTTP 200)")
    assert re.search(r"ledger index: \d+", outputs[0]), outputs[0]
    assert outputs[1].startswith("denied (HTTP 403)")
    assert '"decision_id"' in outputs[3]


def test_the_console_line_opens_the_console_on_the_default_ledger(tmp_path: Path) -> None:
    (line,) = sh_lines("The audit console")
    venv_bin, env, serve = start_default_service(tmp_path)
    console = None
    try:
        check = [str(venv_bin / "authz-ledger"), "check", "--path", "/orders/1", "-H", "x-user: bob"]
        subprocess.run(check, cwd=ROOT, env=env, capture_output=True, timeout=60, check=True)
        console = subprocess.Popen(
            ["bash", "-c", "exec " + line.replace(".venv/bin/", f"{venv_bin}/")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "console.log").open("w"),
            text=True,
        )
        assert "http://127.0.0.1:9194/" in (console.stdout.readline() if console.stdout else "")

        def found() -> bytes:
            with urllib.request.urlopen("http://127.0.0.1:9194/api/search?q=user:bob", timeout=5) as r:
                body: bytes = r.read()
                return body

        assert b'"/orders/1"' in wait_until(found, lambda b: b'"/orders/1"' in b, timeout=30, ignoring=OSError)
    finally:
        console_code = None if console is None else stop_process(console)
        assert stop_process(serve) == 0
    assert console_code == 0, (tmp_path / "console.log").read_text()


def test_the_auditors_lines_replay_pack_and_verify_the_default_ledger(tmp_path: Path) -> None:
    lines = sh_lines("The auditor's tools")
    venv_bin, env, serve = start_default_service(tmp_path)
    try:
        authz = str(venv_bin / "authz-ledger")
        for user, method, path in (("alice", "GET", "/api/items"), ("carol", "POST", "/people")):
            check = [authz, "check", "--method", method, "--path", path, "-H", f"x-user: {user}"]
            subprocess.run(check, cwd=ROOT, env=env, capture_output=True, timeout=60, check=True)
        data_dir = tmp_path / ".local" / "share" / "authz-ledger"

        def signed_size() -> int:
            argv = [authz, "checkpoint", "--data-dir", str(data_dir)]
            note = subprocess.run(argv, capture_output=True, text=True, check=False)
            return int(note.stdout.split("\n")[1]) if note.returncode == 0 else 0

        wait_until(signed_size, lambda n: n >= 2, timeout=30, message="a checkpoint covers both decisions")
        # One shell, as a reader pastes the block: the first line's variables serve the others.
        script = "".join(f'{line.replace(".venv/bin/", f"{venv_bin}/")}\necho "exit=$?"\n' for line in lines)
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        assert stop_process(serve) == 0
    out = done.stdout
    # The read-only candidate would deny carol's POST (exit 1: something changes); the pack verifies.
    assert re.findall(r"exit=(\d+)", out) == ["0", "1", "0", "0"], out + done.stderr
    assert "replayed 2 decisions" in out and "1 would change" in out, out
    assert "wrote " in out and (tmp_path / "last-hour.evidence.zip").is_file()
    assert re.search(r"^OK: .*last-hour\.evidence\.zip: 2 decisions of ", out, re.M), out
