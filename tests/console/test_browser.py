"""The audit console in a real browser (Debian's chromium), over a ledger a real ``serve`` wrote from real Checks:
an auditor searches for a user, opens a decision and sees it verified in the page; checks a receipt offline;
watches the live tail; and, after one byte of that decision is changed on disk, sees the verdict FAILED."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from authz_ledger.tlog import note
from tests.conftest import free_port, serve_process, stop_process
from tests.support.browser import browser, by_testid, screenshot, wait_for_text
from tests.support.waits import wait_until

__all__ = ["browser"]  # the fixture

CHECKS = [  # (user, method, path): the example policy allows alice everything, bob GETs under /orders, /people
    ("alice", "GET", "/orders/1"),
    ("bob", "DELETE", "/people/7"),
    ("bob", "GET", "/orders/2"),
    ("carol", "POST", "/people"),
    ("bob", "POST", "/admin/users"),
    ("alice", "DELETE", "/admin/users/3"),
]


@dataclass
class Deployment:
    data_dir: Path
    serve: subprocess.Popen[str] | None
    check_port: int
    console: subprocess.Popen[str]
    url: str

    def check(self, user: str, method: str, path: str) -> bool:
        req = external_auth_pb2.CheckRequest()
        http = req.attributes.request.http
        http.method, http.path, http.host = method, path, "shop.example"
        http.headers.update({"x-user": user, ":authority": "shop.example", "user-agent": "curl/8.5"})
        with grpc.insecure_channel(f"127.0.0.1:{self.check_port}") as channel:
            reply = external_auth_pb2_grpc.AuthorizationStub(channel).Check(req, timeout=10)
        return reply.status.code == 0

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            body: bytes = r.read()
            return body


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "authz_ledger.cli", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    data_dir = tmp_path / "data"
    check_port = free_port()
    serve = serve_process(data_dir, check_port, "ledger.checkpoint_interval_ms=200")
    console = None
    try:
        vkey = cli("vkey", "--data-dir", str(data_dir))
        port = free_port()
        argv = [sys.executable, "-m", "authz_ledger.cli", "console", "--data-dir", str(data_dir), "--vkey", vkey]
        argv += ["--addr", f"127.0.0.1:{port}", "--index-dir", str(tmp_path / "console-index")]
        with (tmp_path / "console.log").open("w") as log:
            console = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        assert console.stdout is not None
        assert "authz-ledger console: http://127.0.0.1:" in console.stdout.readline()
        d = Deployment(data_dir, serve, check_port, console, f"http://127.0.0.1:{port}")
        wait_until(lambda: d.get("/healthz"), timeout=20, ignoring=OSError, message="the console answers")
        yield d
    finally:
        if console is not None:
            stop_process(console)  # type: ignore[arg-type]
        if serve.poll() is None:
            stop_process(serve)


def open_entry_from_search(driver: webdriver.Chrome, d: Deployment, query: str) -> int:
    driver.get(d.url + "/")
    box = by_testid(driver, "search")
    box.clear()
    box.send_keys(query, Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda dr: dr.find_elements(By.CSS_SELECTOR, '[data-testid="row"]'))
    rows = driver.find_elements(By.CSS_SELECTOR, '[data-testid="row"]')
    assert "q=user%3Abob" in driver.current_url  # the query is in the URL: the page can be shared
    assert all("bob" in r.text and "deny" in r.text for r in rows)
    assert len(rows) == 2
    screenshot(driver, "1-search")
    index = int(rows[-1].get_attribute("data-index") or -1)
    rows[-1].find_element(By.CSS_SELECTOR, "td.path a").click()
    WebDriverWait(driver, 10).until(lambda dr: dr.find_elements(By.CSS_SELECTOR, '[data-testid="entry"]'))
    return index


def flip_a_byte_of(data_dir: Path, decision_id: str) -> None:
    """Change one character of the decision's id everywhere it is stored in data.mdb (LMDB copies pages on
    write, so an old copy may sit in a free page too): the entry still decodes, but it is not what was hashed."""
    mdb = data_dir / "ledger" / "data.mdb"
    data = bytearray(mdb.read_bytes())
    old = decision_id.encode()
    new = old[:-1] + (b"0" if old[-1:] != b"0" else b"1")
    assert data.count(old) >= 1
    with mdb.open("r+b") as f:
        for m in re.finditer(re.escape(old), data):
            f.seek(m.start())
            f.write(new)


def test_an_auditor_finds_a_decision_sees_it_verified_and_a_changed_byte_fail(
    browser: webdriver.Chrome, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    assert [d.check(*c) for c in CHECKS] == [True, False, True, True, False, True]
    wait_until(lambda: b'"indexed":6' in d.get("/healthz"), timeout=20, message="the console indexes the Checks")

    # Find: bob's denials, newest first; open the older one.
    index = open_entry_from_search(browser, d, "user:bob outcome:deny")
    entry = by_testid(browser, "entry")
    assert "DELETE shop.example/people/7" in entry.text
    assert "x-user" in by_testid(browser, "input").text

    # Verify: the page checks the bytes, the proof and the signed checkpoint with the key itself.
    verdict = wait_for_text(browser, "verified", "verified", "FAILED")
    screenshot(browser, "2-entry-verified")
    assert verdict.startswith("verified"), verdict
    assert f"entry {index} is in the signed log" in verdict
    decision_id = entry.get_attribute("data-decision-id") or ""

    # The auditor trusts a key, not the server: pin another key and the same entry no longer verifies.
    browser.find_element(By.CSS_SELECTOR, "details.keys summary").click()
    box = by_testid(browser, "vkey")
    box.clear()
    box.send_keys(note.generate_signer("someone.else/log").verifier_key())
    old = by_testid(browser, "verified")
    browser.find_element(By.ID, "vkey-save").click()
    WebDriverWait(browser, 10).until(staleness_of(old))  # the page reloads with the pinned key
    verdict = wait_for_text(browser, "verified", "verified:", "FAILED")
    assert verdict.startswith("FAILED") and "no checkpoint signature by a trusted key" in verdict, verdict
    browser.find_element(By.CSS_SELECTOR, "details.keys summary").click()
    old = by_testid(browser, "verified")
    browser.find_element(By.ID, "vkey-reset").click()
    WebDriverWait(browser, 10).until(staleness_of(old))
    assert wait_for_text(browser, "verified", "verified:", "FAILED").startswith("verified")

    # A receipt and the entry bytes, checked offline in the page.
    receipt_file, entry_file = tmp_path / f"entry-{index}.tlog-proof", tmp_path / f"entry-{index}.bin"
    receipt_file.write_bytes(d.get(f"/api/receipt/{index}"))
    entry_file.write_bytes(d.get(f"/api/entry/{index}/raw"))
    browser.get(d.url + "/verify")
    by_testid(browser, "files").send_keys(f"{receipt_file}\n{entry_file}")
    verdict = wait_for_text(browser, "verified", "verified", "FAILED")
    screenshot(browser, "3-receipt-verified")
    assert verdict.startswith("verified"), verdict

    # The live tail shows a decision made while the page is open.
    browser.get(d.url + "/?q=user:dave")
    by_testid(browser, "live").click()
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="row"]')
    assert not d.check("dave", "GET", "/orders/9")
    WebDriverWait(browser, 20).until(lambda dr: dr.find_elements(By.CSS_SELECTOR, '[data-testid="row"]'))
    assert "/orders/9" in by_testid(browser, "row").text
    screenshot(browser, "4-live-tail")

    # See: rates and the checkpoints that signed them.
    browser.get(d.url + "/stats?range=1h")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="rates"] svg rect')
    screenshot(browser, "5-stats")

    # Tamper: stop the service, change one byte of that decision on disk, look again.
    assert d.serve is not None
    stop_process(d.serve)
    flip_a_byte_of(d.data_dir, decision_id)
    browser.get(f"{d.url}/entry/{index}")
    verdict = wait_for_text(browser, "verified", "verified", "FAILED")
    screenshot(browser, "6-entry-tampered")
    assert verdict.startswith("FAILED"), verdict
    assert "leaf hash does not match: the entry bytes are not what was recorded" in verdict
