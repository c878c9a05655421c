"""Driving the query page in the real browser: ask a question and wait for the cases, keep a screenshot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

ARTIFACTS = Path("build/test-artifacts/page")


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    logging.getLogger(__name__).warning("screenshot: %s", path.resolve())  # shown in the test's report
    return path


def ask(driver: Any, url: str, query: str, k: int = 3) -> None:
    """Type the query into the page at `url`, ask for k cases, and wait until they are shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "text").send_keys(query)
    driver.find_element(By.ID, "k").clear()
    driver.find_element(By.ID, "k").send_keys(str(k))
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 60).until(ec.text_to_be_present_in_element((By.ID, "status"), "similar cases"))
