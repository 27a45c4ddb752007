"""Debian's chromium driven by playwright (no browser download), shared by the browser tests."""

import shutil

import pytest

#: flags for a headless run on a machine without a GPU, a sandbox or the network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_launcher():
    """``(sync_playwright, chromium executable, launch args)``; skips the calling test where chromium or
    playwright is missing (scripts/setup installs both where it can)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it where apt-get can)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    return sync_playwright, chromium, CHROMIUM_ARGS
