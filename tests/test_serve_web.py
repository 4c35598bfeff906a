"""The web page at ``/`` in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Set ``NST_DOCS_SCREENSHOT=docs/images/web_page.png`` to also write the screenshot used by the docs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from nst_lightning.inference import StylizeOptions
from nst_lightning.serve import ServeSettings, create_app
from nst_lightning.serve.server import running_in_thread
from tests.conftest import SHARED_DATA, synthetic_photo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_stylize_download_in_chromium(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.jpg"
    real = SHARED_DATA / "content" / "golden_gate.jpg"  # a content (not eval) photo, when the data is here
    (Image.open(real).convert("RGB") if real.exists() else synthetic_photo(480, 320, seed=0)).save(photo)
    app = create_app(ServeSettings(runtime="eager", max_size=384))
    with running_in_thread(app) as url:
        driver = browser
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '.style[data-name="starry_night"]'))).click()
        assert driver.find_element(By.CSS_SELECTOR, ".style img").get_property("naturalWidth") > 0  # thumbnail
        assert not driver.find_element(By.ID, "download").is_displayed()  # no result yet: no Download button
        driver.find_element(By.ID, "photo").send_keys(str(photo))
        driver.execute_script(
            "const s = document.getElementById('strength'); s.value = '0.85';s.dispatchEvent(new Event('input'));"
        )
        assert driver.find_element(By.ID, "strength-value").text == "0.85"
        assert driver.find_element(By.ID, "input-noise-value").text == f"{StylizeOptions().input_noise:.2f}"
        driver.execute_script(
            "const s = document.getElementById('stroke-scale'); s.value = '2';s.dispatchEvent(new Event('input'));"
        )
        assert driver.find_element(By.ID, "stroke-scale-value").text == "2.00"
        wait.until(EC.element_to_be_clickable((By.ID, "go"))).click()
        wait.until(lambda d: d.find_element(By.ID, "result").get_property("naturalWidth") > 0)
        result = driver.find_element(By.ID, "result")
        assert result.is_displayed() and result.get_property("naturalWidth") == 384
        download = driver.find_element(By.ID, "download")
        assert download.is_displayed() and download.get_attribute("href").startswith("blob:")
        assert download.get_attribute("download") == "photo_starry_night.png"
        assert "Done in" in driver.find_element(By.ID, "status").text
        shot = tmp_path / "web_page.png"
        driver.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    docs = os.environ.get("NST_DOCS_SCREENSHOT")
    if docs:
        Path(docs).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, docs)
