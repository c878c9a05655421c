"""The clinician page in a real headless Chromium (issue 17): the case view, citations that jump to their
case, the follow-up box, the synthetic-data banner, keyboard navigation, contrast, and a phone-wide
layout. Screenshots go to build/test-artifacts/page/ (git-ignored; CI keeps the folder)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest

from tests.serving.page import ask, shot
from tests.serving.service import Service

QUERY = "Polyuria, polydipsia, vomiting and abdominal pain; blood glucose 32 mmol/L with ketonaemia"


def test_case_view_citations_and_banner(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1280, 1000)
    ask(browser, dev_service.url, QUERY)
    wait = WebDriverWait(browser, 30)
    banner = browser.find_element(By.ID, "synthetic-banner")
    wait.until(lambda d: banner.is_displayed())
    assert "synthetic" in banner.text and "not real patients" in banner.text

    items = browser.find_elements(By.CSS_SELECTOR, "#cases > li")
    assert len(items) == 3
    meta = items[0].find_element(By.CLASS_NAME, "case-meta").text
    assert re.search(r"\d+ (hour|day|week|month|year)s?", meta) and ("female" in meta or "male" in meta)
    assert "0.0" not in meta.split("·")[0]  # not decimal years
    marks = [m.text.lower() for m in items[0].find_elements(By.CSS_SELECTOR, ".passages mark")]
    assert marks and {"polyuria", "polydipsia"} & set(marks)

    analysis = browser.find_element(By.ID, "analysis-text")
    assert "not written by" in analysis.text
    for passage in items[0].find_elements(By.CSS_SELECTOR, ".passages li"):
        assert passage.text not in analysis.text  # no repeated text
    cites = analysis.find_elements(By.CSS_SELECTOR, "a.cite")
    assert {c.get_attribute("data-ref") for c in cites} >= {"1", "2", "3"}
    browser.execute_script("window.scrollTo(0, 0)")
    last = next(c for c in cites if c.get_attribute("data-ref") == "3")
    last.click()
    assert browser.execute_script("return document.activeElement.id") == "case-3"
    top = browser.execute_script("return document.getElementById('case-3').getBoundingClientRect().top")
    assert 0 <= top < browser.execute_script("return window.innerHeight")

    opener = items[0].find_element(By.CSS_SELECTOR, "button.open-case")
    opener.click()
    view = items[0].find_element(By.CLASS_NAME, "case-view")
    wait.until(lambda d: view.is_displayed() and view.find_elements(By.CLASS_NAME, "case-text"))
    assert opener.get_attribute("aria-expanded") == "true"
    links = {a.text: a.get_attribute("href") for a in view.find_elements(By.CSS_SELECTOR, ".links a")}
    assert any(h.startswith("https://pubmed.ncbi.nlm.nih.gov/") for h in links.values())
    assert any(h.startswith("https://pmc.ncbi.nlm.nih.gov/articles/PMC") for h in links.values())
    highlighted = [m.text for m in view.find_elements(By.CSS_SELECTOR, ".case-text mark.match")]
    passages = [p.text for p in items[0].find_elements(By.CSS_SELECTOR, ".passages li")]
    assert highlighted and set(highlighted) <= set(passages)
    whole = view.find_element(By.CLASS_NAME, "case-text").text
    assert len(whole) > sum(len(p) for p in passages) and "diagnosis of diabetic ketoacidosis" in whole
    assert "invented" in view.text  # the synthetic record says its links are not its own
    shot(browser, "case-view-desktop")


def test_follow_up_box(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1280, 1000)
    ask(browser, dev_service.url, QUERY)
    box = browser.find_element(By.ID, "followup-text")
    assert box.is_displayed()
    box.send_keys("Which of these were treated with an insulin infusion?")
    browser.find_element(By.ID, "followup-submit").click()
    WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "followup-status"), "Answered"))
    answer = browser.find_element(By.ID, "followup-answer")
    assert "not written by" in answer.text and "insulin infusion" in answer.text
    cite = answer.find_elements(By.CSS_SELECTOR, "a.cite")[0]
    ref = cite.get_attribute("data-ref")
    cite.click()
    assert browser.execute_script("return document.activeElement.id") == f"case-{ref}"
    browser.execute_script("document.getElementById('followup').scrollIntoView()")
    shot(browser, "follow-up")


def test_keyboard_reaches_everything_with_visible_focus(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(1280, 1000)
    ask(browser, dev_service.url, QUERY)
    # From the top of the page: the skip link is its first stop.
    browser.execute_script("window.scrollTo(0, 0); document.querySelector('a.skip').focus()")

    def tab() -> None:  # to whatever has the focus, as a keyboard does
        ActionChains(browser).send_keys(Keys.TAB).perform()

    reached: list[str] = []
    outlines: dict[str, str] = {}
    for _ in range(150):
        label = browser.execute_script(
            "const e = document.activeElement;"
            "return e.id || (e.classList.contains('open-case') ? 'open-' + e.dataset.ref"
            " : e.tagName.toLowerCase() + ':' + (e.getAttribute('href') || e.textContent).slice(0, 40));"
        )
        reached.append(label)
        outlines[label] = browser.execute_script(
            "const s = getComputedStyle(document.activeElement); return s.outlineStyle + ' ' + s.outlineWidth;"
        )
        if label == "followup-submit":
            break
        tab()
    for wanted in ("text", "submit", "open-1", "open-2", "open-3", "followup-text", "followup-submit"):
        assert wanted in reached, (wanted, reached)
    assert reached.index("text") < reached.index("submit") < reached.index("open-1") < reached.index("followup-text")
    for label in ("text", "submit", "open-1", "followup-text"):
        style, width = outlines[label].split()
        assert style != "none" and float(width.removesuffix("px")) >= 2, (label, outlines[label])
    # A case opens from the keyboard.
    browser.execute_script("document.querySelector('button.open-case').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#case-view-1 .case-text"))
    shot(browser, "keyboard-focus")


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: tuple[float, float, float], bg: tuple[float, float, float]) -> float:
    """The WCAG 2 contrast ratio of two colours."""
    high, low = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (high + 0.05) / (low + 0.05)


PAIRS_JS = """
function rgb(s) { const m = s.match(/[\\d.]+/g).map(Number); return m; }
function background(e) {
  for (; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
}
const out = [];
for (const selector of arguments[0]) {
  for (const e of document.querySelectorAll(selector)) {
    if (!e.offsetParent && e.tagName !== 'BODY') continue;
    out.push([selector, rgb(getComputedStyle(e).color).slice(0, 3), background(e)]);
  }
}
return out;
"""


def test_text_colours_meet_wcag_aa(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    browser.set_window_size(1280, 1000)
    ask(browser, dev_service.url, QUERY)
    browser.find_element(By.CSS_SELECTOR, "button.open-case").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#case-view-1 .case-text"))
    selectors = [
        "body", "header p", "label", "#status", "button", "#cases a", ".case-meta", ".passages li", "mark",
        "#analysis-text p", "a.cite", ".meta", ".hint", ".banner", ".tag", ".case-text", ".case-view .links a",
        "#followup label", "h1", "h2",
    ]  # fmt: skip
    pairs = browser.execute_script(PAIRS_JS, selectors)
    seen = {selector for selector, _, _ in pairs}
    assert {"body", ".case-meta", ".passages li", "mark", ".banner", "button", ".case-text", ".meta"} <= seen
    for selector, fg, bg in pairs:
        ratio = contrast(tuple(fg), tuple(bg))
        assert ratio >= 4.5, (selector, fg, bg, round(ratio, 2))


def test_phone_width_layout(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(375, 812)
    width = browser.execute_script("return window.innerWidth")
    if width > 420:  # some headless builds keep a minimum window width: emulate the phone instead
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}
        )
    ask(browser, dev_service.url, QUERY)
    assert browser.execute_script("return window.innerWidth") <= 420
    browser.find_element(By.CSS_SELECTOR, "button.open-case").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#case-view-1 .case-text"))
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px at phone width"
    for element_id in ("text", "submit", "followup-text", "followup-submit"):
        box = browser.execute_script(
            f"const r = document.getElementById('{element_id}').getBoundingClientRect(); return [r.left, r.right];"
        )
        assert box[0] >= 0 and box[1] <= browser.execute_script("return window.innerWidth") + 1, element_id
    submit = browser.find_element(By.ID, "submit").size
    assert submit["height"] >= 24 and submit["width"] >= 200  # a full-width target on a phone
    shot(browser, "phone-375-results")
    browser.execute_script("document.getElementById('case-view-1').scrollIntoView()")
    shot(browser, "phone-375-case-view")


@pytest.fixture(autouse=True)
def _reset_emulation(browser) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    with contextlib.suppress(Exception):  # the browser may have gone with its test
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
