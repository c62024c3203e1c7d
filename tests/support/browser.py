"""A real browser for the console's tests: Debian's chromium driven through chromium-driver by selenium.

tests/run.sh installs both packages; when either is missing the test fails and says so (never skips).
Screenshots go to ``test-artifacts/console/`` at the repository root (``AUTHZ_LEDGER_ARTIFACTS`` overrides it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("AUTHZ_LEDGER_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: tests/run.sh installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the test machine runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium keeps trying to reach Google's hosts, which a closed network refuses.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def by_testid(driver: webdriver.Chrome, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def wait_for_text(driver: webdriver.Chrome, name: str, *words: str, timeout: float = 20) -> str:
    """Wait until the element with data-testid ``name`` shows one of ``words``; return its text."""
    WebDriverWait(driver, timeout).until(lambda d: any(w in by_testid(d, name).text for w in words))
    return by_testid(driver, name).text


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    out = ARTIFACTS / "console" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return out
