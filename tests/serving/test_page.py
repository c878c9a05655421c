"""The clinician page in a real headless Chromium (Debian's chromium and chromedriver): type a query,
submit, see the cases with links to their articles, and the analysis."""

from __future__ import annotations

from tests.serving.service import Service


def test_type_a_query_submit_and_see_results(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(dev_service.url + "/")
    assert "PatientInsight" in browser.title
    browser.find_element(By.ID, "text").send_keys(
        "Polyuria, polydipsia, vomiting and abdominal pain; blood glucose 32 mmol/L with ketonaemia"
    )
    Select(browser.find_element(By.ID, "sex")).select_by_value("F")
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("3")
    browser.find_element(By.ID, "submit").click()

    wait = WebDriverWait(browser, 60)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "similar cases"))
    items = browser.find_elements(By.CSS_SELECTOR, "#cases > li")
    assert len(items) == 3
    first_link = items[0].find_element(By.TAG_NAME, "a")
    assert first_link.get_attribute("href").startswith("https://pubmed.ncbi.nlm.nih.gov/")
    assert "ketoacidosis" in first_link.text.lower()
    for item in items:
        assert "female" in item.find_element(By.CLASS_NAME, "case-meta").text  # the F filter, in words
        assert item.find_elements(By.CSS_SELECTOR, ".passages li")
    analysis = browser.find_element(By.ID, "analysis-text").text
    assert "No language model is configured" in analysis and "[1]" in analysis
    assert browser.find_element(By.ID, "analysis").is_displayed()


def test_the_page_shows_a_validation_error(dev_service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(dev_service.url + "/")
    browser.find_element(By.ID, "text").send_keys("chest pain")
    browser.find_element(By.ID, "age-min").send_keys("70")
    browser.find_element(By.ID, "age-max").send_keys("20")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "status"), "Error 422"))
    assert "filters" in browser.find_element(By.ID, "status").text
