"""The lessons as a learner sees them, checked in a real browser.

A notebook that executes under papermill can still show a learner a broken widget
("Error displaying widget: model not found") or a report page that does not render.
These tests drive Debian's headless Chromium (``/usr/bin/chromium``, never a downloaded
browser) with Playwright:

* ``test_lesson_00_in_jupyterlab``: JupyterLab from this environment, on a loopback
  port with a random token and throw-away config/settings folders, opens a temporary
  copy of lesson 00, runs Run > Run All Cells, and checks that every cell ran, none shows
  an error, the slice viewer is a live widget (moving its slice slider redraws the image)
  and a tqdm progress bar renders as a widget. Screenshots: ``test-artifacts/lesson00_*.png``.
* ``test_run_report_in_browser``: a smoke run of every lesson, its ``index.html`` served
  on loopback; the table lists every lesson with its status and every link resolves; opened
  from disk, the executed notebook a row links to renders. Screenshot: ``test-artifacts/run_report.png``.

Without ``/usr/bin/chromium`` the tests are skipped with a loud reason (repeated at the end of the
run), unless ``MEDLAB_REQUIRE_BROWSER=1`` is set: then they fail and say how to install it.
``.ci/run`` installs Chromium and sets that variable, so CI always runs them.
Every process they start (JupyterLab, its kernel, Chromium) is stopped by id, pass or fail.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from browser_support import (artifact, chromium, copy_lesson, jupyter_lab, new_page, open_notebook,
                             require_browser, run_all_cells, save_notebook, screenshot_on_failure, serve_folder,
                             wait_until_idle)
from medlab import runner

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("*.ipynb"))
WIDGET_LESSON = NOTEBOOKS / "00_medical_images.ipynb"
SLIDER_STEPS = 7  # arrow-key presses on the slice slider
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------- JupyterLab

def test_lesson_00_in_jupyterlab(tmp_path):
    require_browser()
    lesson = copy_lesson(WIDGET_LESSON, tmp_path / "lessons")
    with (chromium(tmp_path / "chromium-profile") as browser, new_page(browser) as page,
          jupyter_lab(lesson.parent, tmp_path / "jupyter") as lab,
          screenshot_on_failure(page, "lesson00_failure.png")):
        open_notebook(page, lab, lesson.name)
        prompts = run_all_cells(page, lab)
        _assert_no_error_shown(page)
        assert prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), (
            f"not every code cell ran; prompts: {prompts}")

        # The slice viewer is a live widget: its slider is there and moving it redraws the image.
        slice_label = page.locator(".widget-label", has_text=re.compile(r"^\s*slice\s*$"))
        viewer = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=slice_label)
        assert viewer.count() == 1, (
            f"expected one slice viewer widget in the outputs, found {viewer.count()} "
            "(is MEDLAB_HEADLESS set, or did the widget manager fail to render it?)")
        handle = viewer.locator(".widget-slider").filter(has=slice_label).get_by_role("slider")
        image = viewer.locator("img.widget-image")
        viewer.scroll_into_view_if_needed()
        _wait_for_image(page, image)
        start = float(handle.get_attribute("aria-valuenow"))
        before_src, before_png = image.get_attribute("src"), image.screenshot()

        handle.focus()
        for _ in range(SLIDER_STEPS):
            handle.press("ArrowRight")
        target = start + SLIDER_STEPS
        page.wait_for_function("([el, value]) => parseFloat(el.getAttribute('aria-valuenow')) === value",
                               arg=[handle.element_handle(), target], timeout=30_000)
        page.wait_for_function("([el, src]) => el.getAttribute('src') !== src",
                               arg=[image.element_handle(), before_src], timeout=60_000)
        wait_until_idle(page)
        time.sleep(1.0)  # the last redraw's image reaches the page after the kernel goes idle
        _wait_for_image(page, image)
        after_png = image.screenshot()
        readout = viewer.locator(".widget-slider").filter(has=slice_label).locator(".widget-readout").inner_text()
        assert readout.strip() == f"{target:g}", f"slice readout shows {readout!r}, expected {target:g}"
        assert after_png != before_png, f"moving the slice slider from {start:g} to {target:g} did not change the image"
        viewer.evaluate("el => el.scrollIntoView({block: 'start'})")  # sliders and image in view
        page.screenshot(path=artifact("lesson00_widget.png"))

        # A tqdm progress bar renders as a widget, and shows the loop finished (e.g. "7/7").
        bars = page.locator(".jp-OutputArea-output .widget-hbox").filter(
            has=page.locator(".widget-hprogress, .widget-vprogress"))
        assert bars.count() >= 1, (
            f"{lesson.name} shows no progress bar widget; a tqdm.auto loop in the lesson should draw one "
            f"(outputs found: {_output_kinds(page)})")
        bar = bars.first
        bar.evaluate("el => el.scrollIntoView({block: 'center'})")
        assert bar.is_visible(), "the progress bar is in the page but not visible"
        counts = bar.inner_text()
        assert re.search(r"\b(\d+)/\1\b", counts), f"the progress bar did not reach its end: {counts!r}"
        page.screenshot(path=artifact("lesson00_progress.png"))

        # No cell shows an error, in the page or in the notebook JupyterLab saves.
        _assert_no_error_shown(page)
        save_notebook(page, lesson)
        saved = nbformat.read(lesson, as_version=4)
        errors = [(i, o.get("ename"), o.get("evalue")) for i, cell in enumerate(saved.cells)
                  for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"cells with an error output (cell index, type, message): {errors}"
        views = [i for i, cell in enumerate(saved.cells) for o in cell.get("outputs", [])
                 if WIDGET_VIEW_MIME in o.get("data", {})]
        assert views, "the saved notebook holds no widget views"
        assert not page.page_errors, f"uncaught errors in the page: {page.page_errors}"


ERROR_MARKERS = ("Traceback (most recent call last)", "Error displaying widget", "Error rendering output",
                 "model not found")


def _assert_no_error_shown(page) -> None:
    """No output in the notebook shows a traceback or a widget that failed to display."""
    text = page.locator(".jp-Notebook").inner_text()
    for marker in ERROR_MARKERS:
        assert marker not in text, _excerpt(text, marker)


def _wait_for_image(page, image, timeout: float = 60.0) -> None:
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle(),
                           timeout=timeout * 1000)


def _output_kinds(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .map(e => e.dataset.mimeType || e.firstElementChild?.className || '?')""")


def _excerpt(text: str, marker: str, chars: int = 600) -> str:
    at = text.find(marker)
    return f"the notebook shows {marker!r}:\n{text[max(0, at - chars // 2):at + chars]}"


# --------------------------------------------------------------------------- the run report

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    require_browser()  # before the minutes of the smoke run: skip (or fail) at once without a browser
    out = tmp_path_factory.mktemp("smoke-run")
    results = runner.run_notebooks(profile="smoke", out=out, folder=NOTEBOOKS, jobs=2, timeout=600,
                                   log=lambda *args: None)
    return out, results


def test_run_report_in_browser(smoke_run, tmp_path):
    require_browser()
    out, results = smoke_run
    with (chromium(tmp_path / "chromium-profile") as browser, new_page(browser) as page,
          serve_folder(out) as base, screenshot_on_failure(page, "run_report_failure.png")):
        response = page.goto(f"{base}/index.html")
        assert response is not None and response.ok, f"index.html: HTTP {response and response.status}"
        page.wait_for_selector("table tbody tr")
        rows = page.locator("table tbody tr")
        shown = {rows.nth(i).locator("td").first.inner_text().strip(): rows.nth(i) for i in range(rows.count())}
        assert sorted(shown) == sorted(p.stem for p in LESSONS), (
            f"the report lists {sorted(shown)}, the lessons are {sorted(p.stem for p in LESSONS)}")
        assert page.get_by_text(re.compile(rf"\d+ of {len(LESSONS)} notebooks passed")).is_visible()

        for result in results:
            row = shown[result.notebook]
            cells = row.locator("td")
            status = cells.nth(1).inner_text().strip().splitlines()[0]
            assert status == result.status, (
                f"{result.notebook}: the report shows {status!r}, results.json {result.status!r}")
            links = {link.inner_text().strip(): link.evaluate("a => a.href") for link in cells.last.locator("a").all()}
            expected = {"executed notebook", ".ipynb", "metrics.json"} if result.status == "passed" else set()
            assert links and expected <= set(links), f"{result.notebook}: links in the report: {sorted(links)}"
            for label, url in links.items():
                reply = page.request.get(url)
                assert reply.ok, f"{result.notebook}: link {label!r} -> {url}: HTTP {reply.status}"
                body = reply.body()
                assert body, f"{result.notebook}: link {label!r} -> {url} is empty"
                if label == ".ipynb":
                    nbformat.reads(body.decode("utf-8"), as_version=4)
                elif label == "metrics.json":
                    assert json.loads(body)["notebook"] == result.notebook
        page.screenshot(path=artifact("run_report.png"), full_page=True)

        # Opened from disk, as a learner double-clicking it would: the table renders and the
        # executed notebook a row links to opens as a page with the lesson's cells.
        page.goto((out / "index.html").as_uri())
        assert page.locator("table tbody tr").count() == len(LESSONS)
        page.locator("table tbody tr").first.locator("a", has_text="executed notebook").click()
        page.wait_for_load_state()
        assert page.url.startswith("file://") and page.url.endswith(".html"), page.url
        assert page.locator(".jp-Cell").count() > 0, f"{page.url} shows no notebook cells"
        assert not page.page_errors, f"uncaught errors in the report pages: {page.page_errors}"
