"""``mmusim view``'s page in a real browser: headless Chromium driven by Selenium (issue 14).

The test starts Debian's Chromium through its ChromeDriver itself (``make test`` installs both:
packages chromium and chromium-driver; ``MMUSIM_CHROMIUM`` / ``MMUSIM_CHROMEDRIVER`` point
elsewhere). It opens the page from ``file://``, with the browser's network switched off, steps with
the keyboard, the buttons and the slider, checks what each panel shows, and that the console has no
error. The centre of it: on the minimal trace of the self-abort race, the step after the violation
shows the dying CPU writing through its stale TLB entry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from mmusim.cli import main
from mmusim.explore import Model, minimal
from mmusim.explore.trace import to_json
from mmusim.scenario import BUNDLED_DIR

RACE = BUNDLED_DIR / "explore" / "race_self_abort.toml"
REAR = BUNDLED_DIR / "test_guard_page_rear.toml"

CHROMIUM = os.environ.get("MMUSIM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("MMUSIM_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--window-size=1400,1600",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} not found: the browser test needs Debian's {package} "
                        "(make test installs it; or set MMUSIM_CHROMIUM / MMUSIM_CHROMEDRIVER)")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_network_conditions(offline=True, latency=0, throughput=0)  # file:// needs none
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def race_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = Model(RACE)
    result = minimal(model)
    assert result.violation is not None
    folder = tmp_path_factory.mktemp("pages")
    trace = folder / "race.json"
    trace.write_text(json.dumps(to_json(model, result)))
    page = folder / "race.html"
    assert main(["view", str(trace), "--out", str(page)]) == 0
    return page


def data_of(page: Path) -> dict[str, Any]:
    m = re.search(r'<script id="v-data" type="application/json">(.*?)</script>', page.read_text(),
                  re.S)  # fmt: skip
    assert m is not None
    result: dict[str, Any] = json.loads(m.group(1))
    return result


def open_page(driver: WebDriver, page: Path, step: int | None = None) -> None:
    driver.get(page.as_uri() + ("" if step is None else f"#step={step}"))
    driver.get_log("browser")  # start each page with an empty console


def position(driver: WebDriver) -> int:
    text = driver.find_element(By.ID, "v-pos").text
    m = re.fullmatch(r"step (\d+) of (\d+)", text)
    assert m is not None, text
    return int(m.group(1))


def press(driver: WebDriver, key: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_the_page_steps_forward_and_back_with_keys_buttons_and_slider(
    browser: WebDriver, race_page: Path
) -> None:
    data = data_of(race_page)
    last = len(data["steps"]) - 1
    open_page(browser, race_page)
    assert browser.title == "mmusim view: race_self_abort"
    assert position(browser) == 0
    assert "the exploration root" in browser.find_element(By.ID, "v-notes").text
    press(browser, Keys.ARROW_RIGHT)
    assert position(browser) == 1
    press(browser, "j")
    assert position(browser) == 2
    press(browser, Keys.ARROW_LEFT)
    assert position(browser) == 1
    browser.find_element(By.ID, "v-next").click()
    browser.find_element(By.ID, "v-next").click()
    assert position(browser) == 3
    browser.find_element(By.ID, "v-prev").click()
    assert position(browser) == 2
    press(browser, Keys.END)
    assert position(browser) == last
    browser.find_element(By.ID, "v-next").click()  # stays on the last step
    assert position(browser) == last
    press(browser, Keys.HOME)
    assert position(browser) == 0
    browser.find_element(By.ID, "v-last").click()
    assert position(browser) == last
    browser.find_element(By.ID, "v-first").click()
    assert position(browser) == 0
    slider = browser.find_element(By.ID, "v-slider")
    assert slider.get_attribute("max") == str(last)
    slider.send_keys(Keys.ARROW_RIGHT)  # the slider's own keys move it by one
    assert position(browser) == 1
    browser.execute_script(
        "const s = arguments[0]; s.value = '20'; s.dispatchEvent(new Event('input'));", slider
    )
    assert position(browser) == 20
    assert browser.current_url.endswith("#step=20")
    browser.find_elements(By.CSS_SELECTOR, "#v-list-body li")[5].click()
    assert position(browser) == 5
    assert "v-current" in browser.find_elements(By.CSS_SELECTOR, "#v-list-body li")[5].get_attribute("class")  # fmt: skip
    assert console_errors(browser) == []


def test_each_step_shows_its_label_and_marks_what_changed(
    browser: WebDriver, race_page: Path
) -> None:
    data = data_of(race_page)
    open_page(browser, race_page, 1)
    step = data["steps"][1]
    banner = browser.find_element(By.ID, "v-step-text").text
    assert (
        banner == f"step 1: CPU {step['cpu']}  {step['thread']}  {step['routine']}: {step['label']}"
    )
    # The first step takes _sched_spinlock: its cell, and only the fields that changed, are marked.
    assert step["label"] == "k_spin_lock(_sched_spinlock)"
    cell = browser.find_element(By.CSS_SELECTOR, 'td[data-key="kernel._sched_spinlock"]')
    assert cell.text == f"CPU {step['cpu']}" and "v-changed" in cell.get_attribute("class")
    other = browser.find_element(By.CSS_SELECTOR, 'td[data-key="kernel.thread_to_cleanup"]')
    assert "v-changed" not in (other.get_attribute("class") or "")
    press(browser, Keys.ARROW_RIGHT)  # the unlock: marked again, now "-"
    cell = browser.find_element(By.CSS_SELECTOR, 'td[data-key="kernel._sched_spinlock"]')
    assert cell.text == "-" and "v-changed" in cell.get_attribute("class")
    svg = browser.find_element(By.CSS_SELECTOR, "#v-map-body svg")
    assert "GUARD" in svg.text and "stack of a" in svg.text
    assert console_errors(browser) == []


def test_the_stale_tlb_write_of_the_dying_cpu_is_shown_at_its_step(
    browser: WebDriver, race_page: Path
) -> None:
    data = data_of(race_page)
    message = data["meta"]["verdict"]
    m = re.search(r"CPU (\d+) runs \S+ on its stack at \S+, but page (0x[0-9a-f]+)", message)
    assert m is not None, message
    cpu, page = m.group(1), m.group(2)
    open_page(browser, race_page)
    press(browser, "n")  # the next step with an event: the violation
    violation = position(browser)
    assert violation == max(s["i"] for s in data["steps"] if s["phase"] == "trace")
    badges = browser.find_element(By.ID, "v-badges").text
    assert "violation" in badges
    assert "self-unmap" in browser.find_element(By.ID, "v-invariants-body").text
    press(browser, "n")  # the next event: the dying CPU's write through its stale TLB entry
    assert position(browser) == violation + 1
    banner = browser.find_element(By.ID, "v-step-text").text
    assert f"CPU {cpu}" in banner and "call z_x86_switch: return address" in banner
    badges = browser.find_element(By.ID, "v-badges").text
    assert "stale" in badges and "consequence" in badges
    event = browser.find_element(By.CSS_SELECTOR, '#v-events-body [data-kind="stale"]')
    assert f"CPU {cpu} writes page {page} through a stale TLB entry (not mapped)" in event.text
    walk = event.find_element(By.CSS_SELECTOR, "pre.v-walk").text
    assert "PTE" in walk and "not present" in walk
    row = browser.find_element(By.CSS_SELECTOR, f'#v-tlbs-body tr[data-cpu="{cpu}"][data-page="{page}"]')  # fmt: skip
    assert "v-stale" in row.get_attribute("class") and "not mapped" in row.text
    press(browser, "p")
    assert position(browser) == violation
    assert console_errors(browser) == []


def test_a_scenario_page_shows_the_fault_its_walk_and_the_console(
    browser: WebDriver, tmp_path: Path
) -> None:
    page = tmp_path / "rear.html"
    assert main(["view", str(REAR), "--out", str(page)]) == 0
    open_page(browser, page)
    assert "PASS  test_guard_page_rear" in browser.find_element(By.ID, "v-verdict").text
    assert "nothing printed yet" in browser.find_element(By.ID, "v-console-body").text
    press(browser, "n")
    event = browser.find_element(By.CSS_SELECTOR, '#v-events-body [data-kind="fault"]')
    assert "fatal exception, vector 14" in event.text and "reason 2 (Stack overflow)" in event.text
    assert "not present" in event.find_element(By.CSS_SELECTOR, "pre.v-walk").text
    console = browser.find_element(By.ID, "v-console-body")
    assert "Page fault at address" in console.text
    assert console.find_elements(By.CSS_SELECTOR, ".v-changed")  # printed in this very step
    assert console_errors(browser) == []


def test_the_page_works_offline_from_a_file_url(browser: WebDriver, race_page: Path) -> None:
    # The browser's network is off (the fixture): a page that fetched anything would log errors.
    open_page(browser, race_page, 3)
    assert position(browser) == 3
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources == []
    assert console_errors(browser) == []


def test_the_browser_is_real() -> None:
    # Not a stand-in: ChromeDriver reports the Chromium it drives.
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.fail(f"Chromium did not start: {e.msg}")
    try:
        assert driver.capabilities["browserName"] == "chrome"
        assert int(driver.capabilities["browserVersion"].split(".")[0]) >= 100
    finally:
        driver.quit()
