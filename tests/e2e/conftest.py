"""Browser tests: the demo's web page in Debian's Chromium, driven by Playwright for Python.

The demo runs as a newcomer starts it (``python -m demo``: embedded moto S3
and SQLite) once per module; Chromium is the system's (scripts/chromium.sh
installs Debian's package when it is missing; Playwright never downloads a
browser). If Chromium or the web assets are missing or do not start, every
test here fails with the reason: nothing is skipped.

Screenshots go to ``test-artifacts/e2e/`` (gitignored).
"""

from __future__ import annotations

import subprocess

import boto3
import pytest
from botocore.config import Config

from ..demo_process import ROOT, DemoProcess

ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _run_script(name: str) -> str:
    done = subprocess.run([str(ROOT / "scripts" / name)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"scripts/{name} failed ({done.returncode}):\n{done.stderr}{done.stdout}", pytrace=False)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium (installed by scripts/chromium.sh when missing)."""
    return _run_script("chromium.sh").splitlines()[-1]


@pytest.fixture(scope="session")
def web_assets() -> None:
    """Uppy from npm, bundled (scripts/web-assets.sh; seconds when up to date)."""
    _run_script("web-assets.sh")


@pytest.fixture(scope="session")
def chromium(chromium_path):
    """The launched browser (named so: pytest-invenio skips tests that use a fixture named ``browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        except Exception as e:
            pytest.fail(f"Chromium ({chromium_path}) did not start: {e}", pytrace=False)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo(web_assets, tmp_path_factory):
    """A running demo (its info: url, users, tokens, s3_endpoint, bucket...)."""
    process = DemoProcess(tmp_path_factory.mktemp("e2e") / "data")
    info = process.start()
    yield info
    assert process.stop() == 0, process.output


@pytest.fixture(scope="module")
def demo_s3(demo):
    """A boto3 client on the demo's S3, for the tests to look at what really is there."""
    return boto3.client(
        "s3", endpoint_url=demo["s3_endpoint"], aws_access_key_id="demo-access-key",
        aws_secret_access_key="demo-secret-key", region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture()
def page(chromium, request):
    """A fresh browser context (no cookies) and page; a screenshot is kept when the test fails."""
    context = chromium.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = getattr(request.node, "rep_call", None)  # set by pytest-invenio's makereport hook
    if report is not None and report.failed:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failed.png"), full_page=True)
    context.close()
