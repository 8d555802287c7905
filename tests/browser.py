"""Opening the pipeline's pages in a real headless browser (Chromium, driven by Playwright), as a reader
would, and reporting what the data in them did there: dialogs opened, elements injected, text shown.

Chromium comes from the system (Debian's `chromium`, which `.ci/run` installs); Playwright never
downloads a browser here. Without one, the tests that need it are skipped with the reason, unless
REQUIRE_CHROMIUM=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# What a hostile dataset puts in its texts: each, were it rendered rather than shown, would run code.
MARKUP = '<script>alert(1)</script> <img src=x onerror=alert(1)> [link](javascript:alert(1))'

# Headless, and nothing that reaches for the network: this machine has none, and a closed network makes
# Chromium retry connections at every start.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# Run in every frame of a page: the elements that only markup from the data could have made (Snakemake's
# report links its own views with `javascript:app.` and `javascript:show_panel(`).
INJECTED = r"""() => ({
    scripts: [...document.querySelectorAll('script')].filter(script => script.textContent.includes('alert(')).length,
    handlers: document.querySelectorAll('[onerror], [onload], [onclick], [onmouseover]').length,
    images: [...document.querySelectorAll('img')].filter(image => image.getAttribute('src') === 'x').length,
    links: [...document.querySelectorAll('a[href^="javascript:"]')]
        .filter(link => !/^javascript:(app\.|show_panel\()/.test(link.getAttribute('href'))).length,
    text: document.body ? document.body.innerText : '',
})"""


def chromium_path() -> str:
    """The system's Chromium, or a skip (a failure where REQUIRE_CHROMIUM=1) that says what is missing."""
    found = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
    if found is None:
        reason = "no Chromium on this machine (Debian: apt install chromium); the browser tests need one"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass
class PageReport:
    """What a page did once loaded: the dialogs it opened and, per frame, the elements from the data and its text."""

    dialogs: list[str] = field(default_factory=list)
    injected: list[dict[str, int]] = field(default_factory=list)
    text: str = ""

    def assert_inert(self, where: str) -> None:
        assert not self.dialogs, f"{where}: dialogs opened: {self.dialogs}"
        assert all(not any(counts.values()) for counts in self.injected), f"{where}: elements from the data: {self.injected}"


class Browser:
    def __init__(self, page) -> None:  # a playwright Page
        self.page = page
        self.dialogs: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def report(self) -> PageReport:
        """The current page and every frame in it (srcdoc and data: frames included)."""
        report = PageReport(dialogs=list(self.dialogs))
        for frame in self.page.frames:
            found = frame.evaluate(INJECTED)
            report.text += found.pop("text") + "\n"
            report.injected.append(found)
        self.dialogs.clear()
        return report

    def open(self, path: Path) -> PageReport:
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.report()

    def open_html(self, html: str, directory: Path, name: str) -> PageReport:
        page = directory / name
        page.write_text(html)
        return self.open(page)

    def snakemake_report_pages(self, report: Path, categories: list[str]) -> Iterator[tuple[str, PageReport]]:
        """Snakemake's report as a reader walks it: each category's HTML results opened with their eye button
        (the report shows them in a frame)."""
        for category in categories:
            self.page.goto(report.resolve().as_uri())
            self.page.get_by_text(category, exact=True).first.click()
            rows = self.page.locator("tr", has=self.page.locator("a[iconname=eye]"))
            names = [name.strip() for name in rows.locator("td").filter(has_not=self.page.locator("a")).all_inner_texts()]
            for name in (name for name in names if name.endswith(".html")):
                rows.filter(has_text=name).locator("a[iconname=eye]").click()
                shown = self.page.wait_for_selector(f'iframe[src*="filename={Path(name).name};"]').content_frame()
                assert shown is not None, name
                shown.wait_for_load_state("load")
                self.page.wait_for_timeout(500)  # the frame's own scripts and images
                yield name, self.report()


@contextmanager
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield Browser(chromium.new_page())
        finally:
            chromium.close()
