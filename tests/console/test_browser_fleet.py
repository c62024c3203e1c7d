"""A console over two shards in a real browser (Debian's chromium): ``authz-ledger console`` with two data
directories and their two keys; the auditor sees one list with rows of both shards, opens an entry of the second
shard and sees it verified with that shard's key, and not with the other's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from authz_ledger.tlog import note
from tests.conftest import free_port, stop_process
from tests.console.test_fleet import A, B, write_shard
from tests.support.browser import browser, by_testid, screenshot, wait_for_text

__all__ = ["browser"]  # the fixture


@pytest.fixture
def fleet_console(tmp_path: Path) -> Iterator[tuple[str, dict[str, note.Signer]]]:
    signers = {
        A: write_shard(tmp_path / "a", A, 60)[0],
        B: write_shard(tmp_path / "b", B, 40, shift_ns=1_000_000_000)[0],
    }
    port = free_port()
    argv = [sys.executable, "-m", "authz_ledger.cli", "console", "--addr", f"127.0.0.1:{port}"]
    argv += ["--index-dir", str(tmp_path / "index")]
    for name, d in ((A, "a"), (B, "b")):
        argv += ["--data-dir", str(tmp_path / d), "--vkey", signers[name].verifier_key()]
    with (tmp_path / "console.log").open("w") as log:
        console = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert console.stdout is not None
        assert console.stdout.readline().strip() == f"authz-ledger console: shards {A}, {B}"
        assert "authz-ledger console: http://127.0.0.1:" in console.stdout.readline()
        yield f"http://127.0.0.1:{port}", signers
    finally:
        stop_process(console)  # type: ignore[arg-type]


def test_an_auditor_sees_both_shards_in_one_list_and_verifies_an_entry_with_its_shards_key(
    browser: webdriver.Chrome, fleet_console: tuple[str, dict[str, note.Signer]]
) -> None:
    url, signers = fleet_console
    browser.get(url + "/")
    # The indexes are built in the background; the unindexed part is scanned, so rows show at once.
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="row-shard"]'))
    shards = {c.text for c in browser.find_elements(By.CSS_SELECTOR, '[data-testid="row-shard"]')}
    assert shards == {A, B}
    screenshot(browser, "fleet-1-merged-list")

    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="row"]')
        if r.find_element(By.CSS_SELECTOR, '[data-testid="row-shard"]').text == B
    )
    index = int(row.get_attribute("data-index") or -1)
    row.find_element(By.CSS_SELECTOR, "td.path a").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="entry"]'))
    assert by_testid(browser, "entry").get_attribute("data-shard") == B
    verdict = wait_for_text(browser, "verified", "verified", "FAILED")
    screenshot(browser, "fleet-2-entry-of-the-second-shard-verified")
    assert verdict.startswith("verified"), verdict
    assert f"entry {index} is in the signed log of 40 entries" in verdict
    assert f"checkpoint: {B}, tree size 40" in browser.find_element(By.ID, "steps").text
    assert f"signature checked with {B}" in browser.find_element(By.ID, "steps").text

    # Pin only the first shard's key: it does not vouch for the second shard's entry.
    browser.find_element(By.CSS_SELECTOR, "details.keys summary").click()
    box = by_testid(browser, "vkey")
    box.clear()
    box.send_keys(signers[A].verifier_key())
    old = by_testid(browser, "verified")
    browser.find_element(By.ID, "vkey-save").click()
    WebDriverWait(browser, 10).until(staleness_of(old))
    verdict = wait_for_text(browser, "verified", "verified:", "FAILED")
    assert verdict.startswith("FAILED") and f"no verifier key named like this shard, {B}" in verdict, verdict
