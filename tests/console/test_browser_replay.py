"""The replay page in a real browser (Debian's chromium), over a ledger a real ``serve`` wrote from real Checks and
a console started with a candidate policy: an operator picks the candidate, watches the run's progress, reads
the summary (the changed count the CLI reports), and opens a changed decision's entry page."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import free_port, serve_process, stop_process, write_policy
from tests.console.test_browser import CHECKS, Deployment, cli
from tests.console.test_replay import ONLY_ALICE
from tests.support.browser import browser, by_testid, screenshot
from tests.support.waits import wait_until

__all__ = ["browser"]  # the fixture


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, Path]]:
    """``serve`` records CHECKS and stops; a console offers the candidate ``only-alice`` over its ledger."""
    data_dir, check_port = tmp_path / "data", free_port()
    serve = serve_process(data_dir, check_port)
    d = Deployment(data_dir, serve, check_port, None, "")  # type: ignore[arg-type]
    try:
        assert [d.check(*c) for c in CHECKS] == [True, False, True, True, False, True]
    finally:
        stop_process(serve)
    candidate = write_policy(tmp_path / "only-alice", ONLY_ALICE)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "authz_ledger.cli",
        "console",
        "--data-dir",
        str(data_dir),
        "--addr",
        f"127.0.0.1:{port}",
    ]
    argv += ["--vkey", cli("vkey", "--data-dir", str(data_dir)), "--index-dir", str(tmp_path / "index")]
    with (tmp_path / "console.log").open("w") as log:
        console = subprocess.Popen(
            [*argv, "--candidate-policy", str(candidate)], stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        assert console.stdout is not None and "authz-ledger console: http://" in console.stdout.readline()
        d = Deployment(data_dir, None, check_port, console, f"http://127.0.0.1:{port}")
        wait_until(lambda: d.get("/healthz"), timeout=20, ignoring=OSError, message="the console answers")
        yield d, candidate
    finally:
        stop_process(console)


def test_an_operator_replays_a_candidate_and_opens_a_decision_it_would_change(
    browser: webdriver.Chrome, deployment: tuple[Deployment, Path]
) -> None:
    d, candidate = deployment
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz_ledger.cli",
            "replay",
            "--data-dir",
            str(d.data_dir),
            "--policy",
            str(candidate),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    expected = json.loads(done.stdout)
    assert expected["changed"] > 0

    browser.get(d.url + "/")
    browser.find_element(By.LINK_TEXT, "Replay").click()
    Select(by_testid(browser, "replay-candidate")).select_by_visible_text("only-alice")
    by_testid(browser, "replay-start").click()
    progress = WebDriverWait(browser, 10).until(  # the engine is still loading the policy
        lambda dr: dr.find_element(By.CSS_SELECTOR, '[data-testid="replay-progress"]')
    )
    assert "Replaying only-alice over every decision" in progress.text
    screenshot(browser, "replay-1-progress")

    summary = WebDriverWait(browser, 60).until(
        lambda dr: dr.find_elements(By.CSS_SELECTOR, '[data-testid="replay-summary"]')
    )
    assert int(by_testid(browser, "replay-changed-count").text) == expected["changed"]
    assert "/orders/* allow 200 -> deny 403" in by_testid(browser, "replay-by-path").text
    assert "carol allow 200 -> deny 403" in by_testid(browser, "replay-by-principal").text
    rows = browser.find_elements(By.CSS_SELECTOR, '[data-testid="replay-change-row"]')
    assert [int(r.get_attribute("data-index") or -1) for r in rows] == [c["index"] for c in expected["changes"]]
    assert summary
    screenshot(browser, "replay-2-summary")

    index = rows[0].get_attribute("data-index")
    rows[0].find_element(By.CSS_SELECTOR, "td.path a").click()
    entry = WebDriverWait(browser, 10).until(lambda dr: dr.find_element(By.CSS_SELECTOR, '[data-testid="entry"]'))
    assert browser.current_url.endswith(f"/entry/{index}")
    assert entry.get_attribute("data-decision-id") == expected["changes"][0]["decision_id"]
