"""A real headless Chromium for page tests, driven by the python ``playwright`` package.

The system's Chromium is used (``scripts/install_chromium.sh``, run by ``make test``; or
``$LIGHTNING_CAM_CHROMIUM``), never Playwright's download; a fresh profile, offline flags.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.optional import REQUIRE, require

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    """The Chromium executable, or skip (fail under ``make test``) saying how to get one."""
    found = os.environ.get("LIGHTNING_CAM_CHROMIUM") or next(
        (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
    )
    if not found:
        msg = "no Chromium found: run scripts/install_chromium.sh or set LIGHTNING_CAM_CHROMIUM"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {msg}")
        pytest.skip(msg)
    return found


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """``(page, errors)``: a page of a fresh Chromium profile; ``errors`` collects the console
    errors and uncaught exceptions of the page."""
    require("playwright", "pip install playwright (the integrations extra)")
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    profile = tempfile.mkdtemp(prefix="lc-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=ARGS,
                viewport={"width": width, "height": height},
            )  # fmt: skip
            try:
                page = context.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                yield page, errors
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
