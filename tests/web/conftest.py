"""Headless Debian chromium driven by Selenium. Missing browser parts are
installed when the tests run as root, else the run fails saying what to install
(never a silent skip)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests_paths import ARTIFACTS

INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]


def _browser_parts() -> tuple[str, str]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")) and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(INSTALL, check=False, capture_output=True)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(f"the playground tests need Debian's chromium and chromium-driver: run `sudo {' '.join(INSTALL)}`")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_parts()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900", "--disable-gpu"):
        options.add_argument(arg)
    b = webdriver.Chrome(service=Service(driver), options=options)
    b.implicitly_wait(0)
    yield b
    b.quit()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
