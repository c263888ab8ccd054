"""The leaderboard page in a real browser: headless Chromium driven by selenium."""

from __future__ import annotations

import shutil

import pytest

from ctrlshift import results as res
from ctrlshift.cli import main

from .test_evaluation import fake_result


def write_results(folder):
    for seed, acc in ((0, [0.9, 0.8, 0.6]), (1, [0.8, 0.7, 0.5])):
        res.write_result(folder / f"cnn{seed}.json", fake_result("cnn", seed, acc))
    res.write_result(folder / "mix.json", fake_result("mixer", 0, [0.7, 0.5, 0.3]))
    res.write_result(folder / "vit.json", fake_result("vit", 0, [0.95, 0.5, 0.2]))


def test_the_page_is_self_contained(tmp_path):
    write_results(tmp_path)
    assert main(["build", str(tmp_path), "--html"]) == 0
    page = (tmp_path / "leaderboard" / "index.html").read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert page.count("<tr>") == 1 + 3 and 'src="data:image/png;base64,' in page
    assert 'href="../cnn0.json"' in page


def browser():
    """Headless Chromium through selenium; the skip names what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        pytest.skip("needs a Chromium browser and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


@pytest.mark.slow
def test_the_page_loads_and_sorts_in_chromium(tmp_path):
    write_results(tmp_path)
    assert main(["build", str(tmp_path), "--html"]) == 0
    driver = browser()
    try:
        from selenium.webdriver.common.by import By

        driver.get((tmp_path / "leaderboard" / "index.html").as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        rows = driver.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")
        assert len(rows) == 3  # one per model (cnn's two seeds merged)
        models = lambda: [r.find_elements(By.TAG_NAME, "td")[1].text for r in  # noqa: E731
                          driver.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")]
        assert models() == ["cnn", "vit", "mixer"]  # ranked by nAUC
        clean = driver.find_elements(By.CSS_SELECTOR, "table.leaderboard th")[4]
        clean.click()  # ascending clean accuracy
        assert models() == ["mixer", "cnn", "vit"]
        clean.click()  # and descending
        assert models() == ["vit", "cnn", "mixer"]
        driver.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
        assert driver.find_elements(By.CSS_SELECTOR, "img.plot")[0].get_property("naturalWidth") > 100
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_quickstart_page_opens_sorts_and_its_results_verify(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--smoke", "--no-progress"]) == 0
    results = out / "results"
    one = next(results.rglob("resnet20__*.json"))
    assert main(["verify", str(one), "--data", str(out / "data" / "quickstart")]) == 0
    assert main(["build", str(results), "--html"]) == 0
    assert "resnet20 +crop n=60 ✓" in (results / "leaderboard.md").read_text()
    driver = browser()
    try:
        from selenium.webdriver.common.by import By

        driver.get((results / "leaderboard" / "index.html").as_uri())
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        tables = driver.find_elements(By.CSS_SELECTOR, "table.leaderboard")
        assert len(tables) == 3 and all(len(t.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2 for t in tables)
        first = tables[0]
        head = first.find_elements(By.TAG_NAME, "th")[1]  # model
        head.click()
        names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in first.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert names == sorted(names)
        assert len(driver.find_elements(By.CSS_SELECTOR, "img.plot")) == 3
    finally:
        driver.quit()
