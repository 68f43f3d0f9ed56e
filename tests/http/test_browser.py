"""
The dashboard driven in a real browser: headless Chromium (Debian's
C{chromium} and C{chromium-driver}, through selenium) against a real
C{twistd p2pblob} node that downloads from a real seeder, all on 127.0.0.1.

A screenshot of the page is kept in C{artifacts/dashboard.png} at the top
of the checkout.  Without Chromium the test is skipped, unless
C{P2PBLOB_REQUIRE_BROWSER} is set (C{.ci/run} sets it, and installs
Chromium): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration._nodes import Seeder, publish

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser() -> Any:
    """
    A headless Chromium that can reach nothing but 127.0.0.0/8.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if webdriver is None or CHROMIUM is None or CHROMEDRIVER is None:
        message = "needs chromium, chromium-driver and selenium"
        if os.environ.get("P2PBLOB_REQUIRE_BROWSER"):
            raise AssertionError(message + " (P2PBLOB_REQUIRE_BROWSER is set)")
        raise SkipTest(message)
    os.environ.setdefault("SE_OFFLINE", "true")  # (selenium must not fetch drivers)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--no-pings", "--disable-domain-reliability", "--metrics-recording-only",
        # anything not on loopback goes to a proxy that is not there
        "--proxy-server=http://127.0.0.1:9",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class DashboardBrowserTests(SynchronousTestCase):
    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except Exception:  # (an element replaced while it was read)
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.1)

    def test_download_from_the_page(self) -> None:
        """
        Start a download from the form; pause and resume it with its
        buttons; see its progress bar reach 100%.
        """
        driver = browser()
        self.addCleanup(driver.quit)
        from selenium.webdriver.common.by import By

        top = Path(self.mktemp()).absolute()
        top.mkdir(parents=True)
        source = top / "holiday.mp4"
        content = os.urandom(6_000_000)
        source.write_bytes(content)
        sd_hash, _ = publish(top / "seeder", source, top / "sd")
        seeder = Seeder(top / "seeder", "--no-dht")
        self.addCleanup(seeder.kill)
        # slow enough to be paused on the way
        node = Seeder(top / "node", "--no-dht", "--peer", seeder.address,
                      "--max-download", "1MB")
        self.addCleanup(node.kill)
        node.wait_for(rb"HTTP API on ")
        url = json.loads((top / "node" / "api.json").read_text())["url"]

        driver.get(url)
        self.wait("the page to show the node", lambda: "version" in driver.find_element(
            By.ID, "node-line").text)
        # no port mapping, no Tor: the node counts itself reachable
        self.assertEqual(driver.find_element(By.ID, "reach-line").text, "reachable")
        driver.find_element(By.ID, "sd-hash").send_keys(sd_hash)
        driver.find_element(By.CSS_SELECTOR, "#download-form button[type=submit]").click()

        def row() -> Any:
            return driver.find_element(By.CSS_SELECTOR, f'tr[data-sd-hash="{sd_hash}"]')

        self.wait("the download to run", lambda: row().get_attribute("data-state") == "running")
        self.wait("some progress", lambda: float(row().find_element(
            By.TAG_NAME, "progress").get_attribute("data-percent")) > 0)
        row().find_element(By.CSS_SELECTOR, "button[data-action=pause]").click()
        self.wait("the download to pause", lambda: row().get_attribute("data-state") == "paused")
        paused_at = float(row().find_element(By.TAG_NAME, "progress").get_attribute(
            "data-percent"))
        self.assertLess(paused_at, 100.0)
        row().find_element(By.CSS_SELECTOR, "button[data-action=resume]").click()
        self.wait("the download to finish",
                  lambda: row().get_attribute("data-state") == "finished", timeout=120)
        self.assertEqual(row().find_element(By.TAG_NAME, "progress").get_attribute(
            "data-percent"), "100.0")
        self.assertIn("100.0%", row().text)
        self.assertEqual((top / "node" / "downloads" / "holiday.mp4").read_bytes(), content)
        self.assertFalse(driver.find_element(By.ID, "alert").is_displayed())
        ARTIFACTS.mkdir(exist_ok=True)
        self.assertTrue(driver.save_screenshot(str(ARTIFACTS / "dashboard.png")))
