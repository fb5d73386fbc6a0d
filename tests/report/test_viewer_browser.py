"""The report's case viewer in headless Chromium: it loads, follows row clicks, wheel and keys, toggles overlays."""

import io
import time

import numpy as np
import pytest

from nnunet_mtl.cli import main
from tests.report.browser import console_errors, missing_browser, start_chromium, viewer_state, wait_for_viewer

MISSING = missing_browser()
pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=f"no browser for the viewer test: {MISSING}"),
    pytest.mark.slow,  # about 7 s in Chromium, besides the smoke model
]


@pytest.fixture(scope="module")
def report(smoke_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer") / "report"
    assert main(["report", "--model-dir", str(smoke_model[0]), "--out", str(out)]) == 0
    return out / "report.html"


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def wait_until(condition, timeout: float = 10.0):
    """``condition()``'s first value that is neither None nor False."""
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return value


def test_viewer_opens_cases_scrolls_slices_and_toggles_overlays(report, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = start_chromium(tmp_path)
    try:
        start = time.monotonic()
        driver.get(report.as_uri())
        first = wait_for_viewer(driver)
        print(f"viewer ready {time.monotonic() - start:.2f} s after navigation")
        viewer = driver.find_element(By.ID, "viewer")
        canvas = driver.find_element(By.ID, "viewer-canvas")
        driver.execute_script("arguments[0].scrollIntoView()", viewer)
        (tmp_path / "1_opened.png").write_bytes(driver.get_screenshot_as_png())

        # a click on another case's row of the per-case table opens that case
        rows = driver.find_elements(By.CSS_SELECTOR, "#cases tr.viewable")
        assert len(rows) >= 2
        other = next(row for row in rows if row.get_attribute("data-case") != first["case"])
        name = other.get_attribute("data-case")
        driver.execute_script("arguments[0].scrollIntoView({block:'center'})", other)
        other.click()
        state = wait_for_viewer(driver, case=name)
        assert name in driver.find_element(By.ID, "viewer-facts").text
        assert "viewing" in other.get_attribute("class")
        (tmp_path / "2_row_clicked.png").write_bytes(driver.get_screenshot_as_png())

        # the wheel over the axial view (left part of the canvas) moves the axial slice
        driver.execute_script("arguments[0].scrollIntoView()", viewer)
        before = canvas.screenshot_as_png
        origin = ScrollOrigin.from_element(canvas, -canvas.size["width"] // 4, 0)
        ActionChains(driver).scroll_from_origin(origin, 0, 100).perform()
        scrolled = wait_until(lambda: (s := viewer_state(driver))["slice"] != state["slice"] and s)
        assert driver.find_element(By.ID, "viewer-slice").get_attribute("value") == scrolled["slice"]
        assert (pixels(canvas.screenshot_as_png) != pixels(before)).any()

        # keys: up one slice, PageDown ten down (clamped at the first slice)
        slice_now = int(scrolled["slice"])
        driver.execute_script("arguments[0].focus()", viewer)
        ActionChains(driver).send_keys(Keys.ARROW_UP).perform()
        wait_until(lambda: viewer_state(driver)["slice"] == str(slice_now + 1))
        ActionChains(driver).send_keys(Keys.PAGE_DOWN).perform()
        wait_until(lambda: viewer_state(driver)["slice"] == str(max(0, slice_now - 9)))
        (tmp_path / "3_scrolled.png").write_bytes(driver.get_screenshot_as_png())

        # toggling the prediction off changes the rendered pixels, on again restores them
        on = pixels(canvas.screenshot_as_png)
        driver.find_element(By.ID, "viewer-prediction").click()
        off = wait_until(lambda: p if ((p := pixels(canvas.screenshot_as_png)) != on).any() else None)
        (tmp_path / "4_prediction_off.png").write_bytes(driver.get_screenshot_as_png())
        assert (np.abs(off - on).sum(axis=2) > 30).sum() > 20  # a mask's worth of pixels, not noise
        driver.find_element(By.ID, "viewer-prediction").click()
        wait_until(lambda: (pixels(canvas.screenshot_as_png) == on).all())

        assert console_errors(driver) == []
    finally:
        driver.quit()
