"""An evidence pack dropped on the console's /verify page, in a real browser (Debian's chromium): the pack that
``authz-ledger evidence`` wrote from a ledger a real ``serve`` recorded verifies in the page with the log's key;
the same pack with one entry's line changed, or one byte damaged in transit, fails with the member named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

from authz_ledger.evidence import pack
from tests.console.test_browser import CHECKS, Deployment, deployment
from tests.support.browser import browser, by_testid, screenshot, wait_for_text
from tests.support.waits import wait_until

__all__ = ["browser", "deployment"]  # the fixtures


def write_pack(d: Deployment, out: Path) -> bool:
    argv = [sys.executable, "-m", "authz_ledger.cli", "evidence", "--data-dir", str(d.data_dir), "--since", "1h"]
    done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, check=False)
    return done.returncode == 0


def drop(driver: webdriver.Chrome, d: Deployment, file: Path) -> str:
    driver.get(d.url + "/verify")
    by_testid(driver, "files").send_keys(str(file))
    return wait_for_text(driver, "verified", "verified:", "FAILED", timeout=60)


def findings(driver: webdriver.Chrome) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, '[data-testid="finding"]')]


def test_an_auditor_drops_an_evidence_pack_and_sees_it_verified_or_the_changed_member_named(
    browser: webdriver.Chrome, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    assert [d.check(*c) for c in CHECKS] == [True, False, True, True, False, True]
    good = tmp_path / "last-hour.evidence.zip"
    # The pack needs a signed checkpoint covering the decisions: the service signs one every 200 ms.
    wait_until(lambda: write_pack(d, good), timeout=20, message="authz-ledger evidence writes a pack")

    verdict = drop(browser, d, good)
    screenshot(browser, "evidence-verified")
    assert verdict.startswith("verified: 6 decisions"), (verdict, findings(browser))
    steps = by_testid(browser, "verified").find_element(By.XPATH, "following-sibling::ol").text
    assert "each line rebuilt from its entry bytes and proved in the signed tree" in steps
    assert "not checked in this browser: README.txt and report.html" in steps

    # One decision's line rewritten (deny -> allow), the archive's CRC-32s made to match: the line is named.
    members = pack.read_zip(good.read_bytes()).members
    lines = members[pack.ENTRIES].split(b"\n")
    assert b'"outcome": "deny"' in lines[1]
    lines[1] = lines[1].replace(b'"outcome": "deny"', b'"outcome": "allow"')
    members[pack.ENTRIES] = b"\n".join(lines)
    edited = tmp_path / "edited.evidence.zip"
    edited.write_bytes(pack.write_zip(members))
    verdict = drop(browser, d, edited)
    screenshot(browser, "evidence-edited")
    assert verdict.startswith("FAILED") and "entries.jsonl" in verdict, verdict
    assert any(
        f.startswith("entries.jsonl line 2 (index 1): does not match its own entry bytes") for f in findings(browser)
    )

    # One byte damaged in transit (CRC-32 not rewritten): the member is named.
    data = bytearray(good.read_bytes())
    data[data.find(pack.LATEST.encode()) + len(pack.LATEST) + 4] ^= 0x10
    damaged = tmp_path / "damaged.evidence.zip"
    damaged.write_bytes(bytes(data))
    verdict = drop(browser, d, damaged)
    assert verdict.startswith("FAILED"), verdict
    assert any(f.startswith("latest-checkpoint.txt: cannot be read") for f in findings(browser)), findings(browser)
