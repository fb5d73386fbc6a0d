"""Headless Chromium through Selenium and Debian's chromedriver, for tests that open report.html."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--enable-unsafe-swiftshader",  # WebGL2 in software: no GPU on CI
    "--window-size=1280,1000",
    "--force-device-scale-factor=1",
)


def missing_browser() -> str | None:
    """Why no browser test can run here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} not found (apt-get install chromium chromium-driver; .ci/run does)"
    return None


def start_chromium(scratch: Path):
    """Chromium with its temporary files (profile, singleton socket) under ``scratch``, not the system's /tmp."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path given: Selenium Manager, which would look for browsers online, stays out
    service = Service(shutil.which("chromedriver"), env={**os.environ, "TMPDIR": str(scratch)})
    return webdriver.Chrome(options=options, service=service)


def viewer_state(driver) -> dict:
    return driver.execute_script(
        "var v=document.getElementById('viewer');"
        "return {state:v.dataset.state, case:v.dataset.case, slice:v.dataset.slice,"
        "status:document.getElementById('viewer-status').textContent}"
    )


def wait_for_viewer(driver, timeout: float = 60.0, **expected: str) -> dict:
    """Wait until the viewer is ready (and shows ``expected`` state, e.g. case=...); its state."""
    deadline = time.monotonic() + timeout
    while True:
        state = viewer_state(driver)
        if state["state"] == "error":
            raise AssertionError(f"viewer failed: {state['status']}")
        if state["state"] == "ready" and all(state.get(k) == v for k, v in expected.items()):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"viewer not ready with {expected} in {timeout} s: {state}")
        time.sleep(0.05)


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
