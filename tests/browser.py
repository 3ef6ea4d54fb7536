"""Headless chromium for tests: Debian's /usr/bin/chromium driven by Playwright (nothing downloaded).

`make test` installs chromium when it is missing (`make system-deps`); where it is still absent the
browser tests, marked `needs_browser` or `needs_chromium`, are skipped with the reason, never failed.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NO_CHROMIUM = not Path(CHROMIUM).exists()
_NO_PLAYWRIGHT = importlib.util.find_spec("playwright") is None

# Markers for tests that need the browser, so a missing one is a skip with its reason, never a pass.
needs_chromium = pytest.mark.skipif(
    _NO_CHROMIUM, reason="chromium is not installed (kaleido renders PNGs with it); "
    "`make system-deps` installs it (Debian package)")
needs_browser = pytest.mark.skipif(
    _NO_CHROMIUM or _NO_PLAYWRIGHT, reason="headless chromium through Playwright is missing: "
    "`make system-deps` installs chromium, `pip install -e '.[dev]'` Playwright")


def browser_context() -> Iterator[Any]:
    """One browser per test module (launching costs seconds on a busy machine); yields a context."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed; `make system-deps` installs it (Debian package)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


def is_real_png(path: Path, min_bytes: int = 20_000) -> bool:
    """A PNG with enough bytes to hold more than a blank page."""
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) >= min_bytes
