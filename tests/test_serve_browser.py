"""``sisr serve`` in a real browser: Debian's headless Chromium driven by Selenium (nothing downloaded).

Set ``SISR_SERVE_SCREENSHOT=docs/serve.png`` to also write the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}; .ci/run installs them)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="needs selenium (the test extra)")
pytest.importorskip("starlette", reason="sisr serve needs the web extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="sisr serve needs the web extra (starlette, uvicorn)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from sisr.cli import main  # noqa: E402
from sisr.data.images import Image, write_image  # noqa: E402
from sisr.heldout import photo  # noqa: E402
from sisr.serve import Server, model_choices  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,820",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager downloads nothing.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, css: str, timeout: float = 60):
    return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def test_upscale_compare_download_and_a_bad_file_in_chromium(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # A crop of a held-out photograph (scikit-image's chelsea, not in the shipped models' training set).
    source = tmp_path / "chelsea.png"
    write_image(source, Image(pixels=np.ascontiguousarray(photo("chelsea")[40:136, 80:208]), format="PNG"))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    server = Server(
        port=0, models=model_choices([]), max_pixels=10**6, max_upload_bytes=10 * 2**20, root=str(tmp_path)
    )
    try:
        browser.get(server.url)
        WebDriverWait(browser, 30).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) >= 5)
        Select(browser.find_element(By.ID, "model")).select_by_value("seemore-t-x2")
        browser.find_element(By.ID, "files").send_keys(str(source))
        browser.find_element(By.ID, "start").click()
        card = wait_for(browser, ".result[data-state=done] .compare")
        info = browser.find_element(By.CSS_SELECTOR, ".result .info").text
        assert info.startswith("128×96 → 256×192, x2, seemore-t-x2, ")

        # The slider moves the split between the input and the result.
        before = browser.find_element(By.CSS_SELECTOR, ".before")
        assert before.value_of_css_property("clip-path") == "inset(0px 50% 0px 0px)"
        slider = browser.find_element(By.CSS_SELECTOR, ".slider")
        ActionChains(browser).click_and_hold(slider).move_by_offset(
            -slider.size["width"] // 4, 0
        ).release().perform()
        moved = before.value_of_css_property("clip-path")
        assert moved != "inset(0px 50% 0px 0px)" and moved.startswith("inset(0px ")
        Select(browser.find_element(By.CSS_SELECTOR, ".zoom")).select_by_value("2")
        assert browser.find_element(By.CSS_SELECTOR, ".stage").size["width"] == 512
        assert card.is_displayed()

        # The download is the file `sisr upscale` writes for the same input and model, bit for bit.
        browser.find_element(By.CSS_SELECTOR, ".result a.download").click()
        downloaded = tmp_path / "downloads" / "chelsea_x2.png"
        end = time.monotonic() + 30
        while not downloaded.is_file() and time.monotonic() < end:
            time.sleep(0.1)
        assert main(["upscale", str(source), "-m", "seemore-t-x2", "-o", str(tmp_path / "cli.png")]) == 0
        assert downloaded.read_bytes() == (tmp_path / "cli.png").read_bytes()

        # Everything the page loaded came from this server: no CDN, no fonts from elsewhere.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(url.startswith(server.url) for url in resources), resources

        screenshot = tmp_path / "serve.png"
        browser.save_screenshot(str(screenshot))
        pixels = np.asarray(PILImage.open(screenshot).convert("RGB"))
        assert pixels.shape[0] > 400 and pixels.shape[1] > 1000
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # a photo shows
        if os.environ.get("SISR_SERVE_SCREENSHOT"):
            shutil.copyfile(screenshot, os.environ["SISR_SERVE_SCREENSHOT"])

        # A truncated PNG: a message in the page that names the file and the problem.
        browser.find_element(By.ID, "files").send_keys(str(truncated))
        browser.find_element(By.ID, "start").click()
        error = wait_for(browser, ".result[data-state=failed] .error")
        assert error.text == "truncated.png: cannot decode image: image file is truncated"
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        server.close()
