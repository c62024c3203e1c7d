"""The console's replay page over HTTP, hosted by a real ``serve`` (console.enabled) over the decisions it recorded
from real Checks: its report is the one ``authz-ledger replay --json`` prints for the same candidate and query;
one replay runs at a time (the same request joins it, another is told what is running); only configured
candidates run."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from authz_ledger import server
from authz_ledger.config import ConsoleConfig
from authz_ledger.console.context import open_context
from authz_ledger.console.serving import RunningConsole, start_console
from authz_ledger.errors import ConfigError
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, StartService, write_policy
from tests.console.test_app import get
from tests.console.test_replay import ONLY_ALICE, RUNAWAY, send_checks
from tests.support.console import open_console_ledger
from tests.support.waits import wait_until

PAGE_ROWS = 200
"""Changed decisions the page lists at a time."""


@pytest.fixture
def candidates(tmp_path: Path) -> dict[str, Path]:
    return {
        "only-alice": write_policy(tmp_path / "only-alice", ONLY_ALICE),
        "runaway": write_policy(tmp_path / "runaway", RUNAWAY),
    }


@pytest.fixture
def service(authz_service: StartService, candidates: dict[str, Path], tmp_path: Path) -> server.Running:
    """``serve`` with its console and two candidate policies, after the Checks of test_replay.CHECKS."""
    running = authz_service(
        "console.enabled=true",
        "console.addr=127.0.0.1:0",
        f"console.index_dir={tmp_path / 'index'}",
        f"console.candidate_policies=[{', '.join(str(p) for p in candidates.values())}]",
        data_dir=tmp_path / "data",
    )
    send_checks(running.port)
    return running  # authz_service stops it


def console_of(running: server.Running) -> RunningConsole:
    assert running.console is not None
    return running.console


def replay_url(candidate: str, text: str, path: str = "/replay") -> str:
    return f"{path}?{urllib.parse.urlencode({'candidate': candidate, 'q': text})}"


def attribute(page: str, testid: str, name: str) -> str:
    m = re.search(rf'data-testid="{testid}"[^>]*\b{name}="([^"]*)"', page)
    assert m, f"no {testid} with {name} in the page"
    return html.unescape(m[1])


def finished_json(c: RunningConsole, json_url: str, timeout: float = 60) -> bytes:
    """What the report's JSON link answers once the run is done (202 with the progress until then)."""

    def answer() -> tuple[int, bytes]:
        status, _, body = get(c, json_url)
        return status, body

    status, body = wait_until(answer, lambda a: a[0] != 202, timeout=timeout, interval=0.2, message="the run ends")
    assert status == 200, body
    return body


def cli_replay_json(data_dir: Path, policy: Path, text: str) -> bytes:
    """What ``authz-ledger replay --json`` prints (its own process: LMDB opens a ledger once per process)."""
    argv = [sys.executable, "-m", "authz_ledger.cli", "replay", "--data-dir", str(data_dir), "--policy", str(policy)]
    done = subprocess.run([*argv, "--json", "--filter", text], capture_output=True, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "text",
    ["", "user:bob", "method:GET since:1h"],
    ids=["every decision", "one user's decisions", "a method over the last hour"],
)
def test_the_page_shows_the_report_replay_json_prints_for_the_same_candidate_and_query(
    service: server.Running, candidates: dict[str, Path], tmp_path: Path, text: str
) -> None:
    c = console_of(service)
    status, _, body = get(c, replay_url("only-alice", text))
    page = body.decode()
    assert status == 200
    assert 'data-testid="replay-progress"' in page  # the run has just begun: the engine is loading the policy
    assert '<noscript><meta http-equiv="refresh"' in page  # without scripts the page reloads itself
    run, json_url = attribute(page, "replay-progress", "data-run"), attribute(page, "replay-progress", "data-json")

    served = finished_json(c, json_url)
    assert served == cli_replay_json(tmp_path / "data", candidates["only-alice"], text)
    report = json.loads(served)

    status, _, body = get(c, attribute(page, "replay-progress", "data-url"))
    page = body.decode()
    assert status == 200
    assert attribute(page, "replay-summary", "data-run") == run  # the kept report, not a second run
    assert report["policy_version"] in page
    changed = re.search(r'data-testid="replay-changed-count">(\d+)<', page)
    assert changed and int(changed[1]) == report["changed"]
    rows = re.findall(r'<tr data-testid="replay-change-row" data-index="(\d+)">', page)
    assert [int(i) for i in rows] == [ch["index"] for ch in report["changes"]]
    assert all(f'href="/entry/{i}"' in page for i in rows)
    for key in (*report["by_path"], *report["by_principal"]):
        assert html.escape(key) in page
    assert "redacted" in page and f"{report['redacted_inputs']} of the replayed inputs" in page


def test_the_same_request_joins_the_run_and_another_is_told_what_is_running(service: server.Running) -> None:
    c = console_of(service)
    _, _, body = get(c, replay_url("runaway", "user:bob"))
    first = body.decode()
    run = attribute(first, "replay-progress", "data-run")
    started = time.monotonic()

    _, _, body = get(c, replay_url("runaway", "user:bob"))
    assert attribute(body.decode(), "replay-progress", "data-run") == run  # joined, not started again

    status, headers, body = get(c, replay_url("only-alice", ""))
    assert status == 503 and headers["retry-after"]
    busy = body.decode()
    assert 'data-testid="replay-busy"' in busy
    assert "Another replay is running: <b>runaway</b> over <code>user:bob</code>" in busy
    status, _, body = get(c, replay_url("only-alice", "", "/api/replay.json"))
    assert status == 503 and json.loads(body)["running"]["candidate"] == "runaway"
    assert time.monotonic() - started < 1, "the run ended before the other requests: the test proves nothing"

    # The runaway candidate is bounded: each of bob's decisions ends at the 1 s bound, reported as an error.
    report = json.loads(finished_json(c, attribute(first, "replay-progress", "data-json")))
    assert report["replayed"] == 2
    assert [(ch["principal"], ch["now"]) for ch in report["changes"]] == [("bob", "error"), ("bob", "error")]
    assert all("1 s timeout" in ch["error"] for ch in report["changes"]), [ch["error"] for ch in report["changes"]]

    status, _, body = get(c, replay_url("only-alice", ""))  # the console is free again
    assert status == 200 and 'data-testid="replay-progress"' in body.decode()


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (
            replay_url("staging", ""),
            404,
            "no candidate policy named &#39;staging&#39;; this console&#39;s candidates: only-alice, runaway",
        ),
        (replay_url("staging", "", "/api/replay.json"), 404, "no candidate policy named 'staging'"),
        (replay_url("only-alice", "colour:red"), 400, "colour"),
    ],
    ids=["an unknown candidate's page", "an unknown candidate's JSON", "a query that does not parse"],
)
def test_requests_the_console_cannot_run_say_why(service: server.Running, path: str, status: int, message: str) -> None:
    got, _, body = get(console_of(service), path)
    assert got == status
    assert message in body.decode()


def test_a_console_without_candidates_says_how_to_configure_one(tmp_path: Path) -> None:
    ledger = open_console_ledger(tmp_path / "ledger", note.generate_signer(ORIGIN))
    ledger.append(10)
    cfg = ConsoleConfig(enabled=True, addr="127.0.0.1:0", index_dir=str(tmp_path / "index"))
    running = start_console(open_context(ledger.store.path, [], cfg, store=ledger.store), cfg)
    try:
        status, _, body = get(running, "/replay")
        page = body.decode()
        assert status == 200
        assert 'data-testid="replay-no-candidate"' in page
        assert "--candidate-policy PATH" in page and "console.candidate_policies" in page
        assert 'data-testid="replay-form"' not in page
        status, _, body = get(running, replay_url("anything", ""))
        assert status == 404 and "none is configured" in body.decode()
    finally:
        running.stop()
        ledger.store.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [str(d / "missing")], "not a policy directory, bundle .tar.gz or .rego file"),
        (
            lambda d: [str(write_policy(d / "a" / "p", ONLY_ALICE)), str(write_policy(d / "b" / "p", ONLY_ALICE))],
            "have the same name 'p'",
        ),
    ],
    ids=["a path that is no policy", "two candidates with one name"],
)
def test_candidate_policies_the_page_could_not_offer_stop_the_start(
    tmp_path: Path, make: Callable[[Path], list[str]], message: str
) -> None:
    ledger = open_console_ledger(tmp_path / "ledger", note.generate_signer(ORIGIN))
    try:
        cfg = ConsoleConfig(index_dir=str(tmp_path / "index"), candidate_policies=make(tmp_path))
        with pytest.raises(ConfigError, match=re.escape(message)):
            open_context(ledger.store.path, [], cfg, store=ledger.store)
    finally:
        ledger.store.close()


def test_changed_decisions_are_listed_200_a_page_with_a_link_to_the_next(tmp_path: Path) -> None:
    ledger = open_console_ledger(tmp_path / "ledger", note.generate_signer(ORIGIN))
    ledger.append(450)  # 3 in 4 recorded as allow or error: a candidate denying all changes ~340 of them
    deny_all = write_policy(tmp_path / "deny-all", "default allow := false\n")
    cfg = ConsoleConfig(addr="127.0.0.1:0", index_dir=str(tmp_path / "index"), candidate_policies=[str(deny_all)])
    running = start_console(open_context(ledger.store.path, [], cfg, store=ledger.store), cfg)
    try:
        _, _, body = get(running, replay_url("deny-all", ""))
        report = json.loads(finished_json(running, attribute(body.decode(), "replay-progress", "data-json")))
        assert report["replayed"] == 450 and report["changed"] > PAGE_ROWS  # more than one page

        shown: list[int] = []
        url = attribute(body.decode(), "replay-progress", "data-url")
        while url:
            _, _, body = get(running, url)
            page = body.decode()
            rows = [int(i) for i in re.findall(r'data-testid="replay-change-row" data-index="(\d+)"', page)]
            assert 0 < len(rows) <= PAGE_ROWS
            shown += rows
            url = attribute(page, "replay-more", "href") if 'data-testid="replay-more"' in page else ""
        assert shown == [c["index"] for c in report["changes"]]
    finally:
        running.stop()
        ledger.store.close()
