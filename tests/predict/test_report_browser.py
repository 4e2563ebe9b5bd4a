"""The HTML report in a real headless Chromium (``tests/browser.py``): it loads from ``file://``
without a console error, its histograms count the images, sorting and filtering give the
manifest's order and counts, and the image view lays each map over the image with the
slider's opacity (the pixels are the blend).

``LIGHTNING_CAM_SCREENSHOTS=DIR`` also saves the screenshots of the docs there
(``docs/images/report.png``, ``report_image.png``)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lightning_cam.predict.report import write_report
from tests.browser import browser_page
from tests.predict.audit_folder import NUM, make_audit


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out, images = make_audit(tmp_path_factory.mktemp("browser"))
    page = write_report(out, images=images)
    return page, pd.read_parquet(out / "manifest.parquet")


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Any, list[str]]]:
    with browser_page() as got:
        yield got


def _open(browser: tuple[Any, list[str]], page_path: Path, hash_: str = "") -> Any:
    page, errors = browser
    errors.clear()
    page.goto(page_path.resolve().as_uri() + hash_)
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    return page


def _ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#lc-table tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
    )


def _column(page: Any, col: str) -> list[str]:
    index = page.eval_on_selector_all(
        "#lc-table thead th", f"ths => ths.findIndex(t => t.dataset.col === {col!r})"
    )
    return page.eval_on_selector_all(
        "#lc-table tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent)"
    )


def _float(text: str) -> float:
    return float("nan") if text == "—" else float(text)


def test_loads_without_error_and_the_histograms_count_the_images(
    report: tuple[Path, pd.DataFrame], browser: tuple[Any, list[str]]
) -> None:
    page = _open(browser, report[0])
    assert browser[1] == []
    assert page.locator(".lc-means tbody tr").count() == 2  # gradcam, gradcam++ at backbone
    hists = page.locator("svg.lc-hist")
    assert hists.count() == 4
    for h in range(4):  # every bar's tooltip says its count: they add up to the images
        tips = hists.nth(h).locator("rect title").all_text_contents()
        assert sum(int(t.rsplit(":", 1)[1]) for t in tips) == NUM
    assert page.locator("svg.lc-curve").count() == 2  # spearman and SSIM
    assert page.locator("svg.lc-curve polyline").count() == 4
    assert len(_ids(page)) == NUM and browser[1] == []
    shots = os.environ.get("LIGHTNING_CAM_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "report.png"), full_page=True)


def test_sorting_gives_the_manifests_order(
    report: tuple[Path, pd.DataFrame], browser: tuple[Any, list[str]]
) -> None:
    page = _open(browser, report[0])
    df = report[1]
    page.click("th[data-col='id']")
    assert _ids(page) == sorted(df["id"])
    page.click("th[data-col='id']")
    assert _ids(page) == sorted(df["id"], reverse=True)
    assert page.get_attribute("th[data-col='id']", "aria-sort") == "descending"
    page.click("button[data-preset='average_drop']")  # "largest average drop" first
    shown = [_float(v) for v in _column(page, "m:average_drop")]
    want = sorted(df["gradcam/backbone/average_drop"], reverse=True)
    assert np.allclose(shown, want, atol=1e-3)
    page.select_option("#lc-view", "1")  # the metrics of gradcam++
    page.click("th[data-col='m:pointing_game']")
    shown = [_float(v) for v in _column(page, "m:pointing_game")]
    assert shown == sorted(df["gradcam++/backbone/pointing_game"].tolist())
    assert browser[1] == []


def test_filters_give_the_manifests_counts(
    report: tuple[Path, pd.DataFrame], browser: tuple[Any, list[str]]
) -> None:
    page = _open(browser, report[0])
    df = report[1]
    page.fill("#lc-search", "IMG003")
    assert _ids(page) == ["img003"]
    page.fill("#lc-search", "")
    page.check("#lc-misclassified")
    wrong = df[df["label"] != df["predicted_class"]]
    assert sorted(_ids(page)) == sorted(wrong["id"]) and len(wrong) > 0
    assert re.match(rf"{len(wrong)} of {NUM} images", page.inner_text("#lc-count"))
    page.uncheck("#lc-misclassified")
    page.select_option("#lc-class", "2")
    assert sorted(_ids(page)) == sorted(df[df["label"] == 2]["id"])
    page.select_option("#lc-class", "")
    page.select_option("#lc-status", "ok")
    assert len(_ids(page)) == NUM and browser[1] == []


def _pixels(locator: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(float)


def test_the_image_view_blends_each_map_over_the_image_with_the_slider(
    report: tuple[Path, pd.DataFrame], browser: tuple[Any, list[str]]
) -> None:
    page = _open(browser, report[0])
    page.click("#lc-table tbody tr >> nth=3")
    assert page.is_visible("#lc-viewer")
    assert page.inner_text("#lc-viewer-title") == report[1]["id"][3]
    assert page.locator("#lc-tiles .lc-tile").count() == 3  # the image, then 2 maps
    page.wait_for_function(
        "[...document.querySelectorAll('#lc-tiles img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    maps = page.locator("#lc-tiles .lc-map")
    assert maps.count() == 2
    opacity = "el => getComputedStyle(el).opacity"
    assert [maps.nth(j).evaluate(opacity) for j in range(2)] == ["0.5", "0.5"]
    stack = page.locator("#lc-tiles .lc-stack").nth(1)
    shots = {}
    for value in ("0", "100", "50"):
        page.fill("#lc-opacity", value)
        shots[value] = _pixels(stack)
    assert maps.nth(0).evaluate(opacity) == "0.5" and page.inner_text("#lc-opacity-value") == "0.50"
    # opacity 0: the image; 1: the map; 0.5: their mean, pixel by pixel
    image = _pixels(page.locator("#lc-tiles .lc-stack").nth(0))
    assert np.abs(shots["0"] - image).max() <= 1
    assert np.abs(shots["100"] - shots["0"]).mean() > 20
    assert np.abs(shots["50"] - (shots["0"] + shots["100"]) / 2).max() <= 2
    page.fill("#lc-opacity", "80")
    assert maps.nth(1).evaluate(opacity) == "0.8"
    page.click("#lc-viewer-next")
    assert page.inner_text("#lc-viewer-title") == report[1]["id"][4]
    assert maps.nth(0).evaluate(opacity) == "0.8"  # the slider holds for the next image
    shots_dir = os.environ.get("LIGHTNING_CAM_SCREENSHOTS")
    if shots_dir:
        page.fill("#lc-opacity", "50")
        page.locator("#lc-viewer").screenshot(path=str(Path(shots_dir) / "report_image.png"))
    page.keyboard.press("Escape")
    assert not page.is_visible("#lc-viewer") and browser[1] == []


def test_a_link_to_an_image_opens_it(
    report: tuple[Path, pd.DataFrame], browser: tuple[Any, list[str]]
) -> None:
    page = _open(browser, report[0], "#image=img004")
    assert page.is_visible("#lc-viewer") and page.inner_text("#lc-viewer-title") == "img004"
    assert browser[1] == []
