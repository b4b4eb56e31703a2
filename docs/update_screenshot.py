"""Redraw docs/img/view-race.png: `mmusim view` on the minimal trace of the self-abort race, at the
step where the dying CPU writes through its stale TLB entry (docs/view.md).

    .venv/bin/python docs/update_screenshot.py

Needs what the browser test needs: Debian's chromium and chromium-driver (``make test`` installs
them) and selenium (the ``test`` extra). The picture is for people; the browser test
(tests/test_view_browser.py) checks what it shows.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from mmusim.cli import main
from mmusim.explore import Model, minimal
from mmusim.explore.trace import to_json
from mmusim.scenario import BUNDLED_DIR

OUT = Path(__file__).resolve().parent / "img" / "view-race.png"


def run() -> None:
    model = Model(BUNDLED_DIR / "explore" / "race_self_abort.toml")
    result = minimal(model)
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page names the trace as given: race_self_abort.json
        trace, page = Path("race_self_abort.json"), Path(tmp) / "race_self_abort.html"
        trace.write_text(json.dumps(to_json(model, result)))
        main(["view", str(trace), "--out", str(page)])
        data = page.read_text()
        start = data.index('<script id="v-data" type="application/json">') + 44
        steps = json.loads(data[start : data.index("</script>", start)])["steps"]
        stale = next(s["i"] for s in steps if any(e["kind"] == "stale" for e in s["events"]))
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--disable-background-networking", "--window-size=1280,1500"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"{page.as_uri()}#step={stale}")
            driver.save_screenshot(str(OUT))
        finally:
            driver.quit()
            os.chdir(here)
    print(f"wrote {OUT} (step {stale})")


if __name__ == "__main__":
    run()
