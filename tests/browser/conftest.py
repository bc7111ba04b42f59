"""Headless Chromium (Debian's `chromium`) driven by Playwright against the live ASGI server (base_url,
tests/plugins/live_server.py).

Screenshots of every page the journeys visit are saved at desktop and phone widths under
artifacts/screenshots/ (SCREENSHOT_DIR overrides). Without chromium the tests fail, unless
SKIP_BROWSER=1.
"""
import os
import re
import shutil
from pathlib import Path

import pytest

from accounts.models import Membership, User
from billing.services import credit_grant
from tests.factories import make_org

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "artifacts" / "screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "correct horse battery staple 9"


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the browser tests, stopped after them: Playwright's sync API keeps an event loop
    running in the test thread while it is started, which the other suites' async tests cannot share."""
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("SKIP_BROWSER") == "1":
            pytest.skip("SKIP_BROWSER=1: chromium is not installed")
        pytest.fail("chromium is not installed (apt-get install chromium), or set SKIP_BROWSER=1", pytrace=False)
    from playwright.sync_api import sync_playwright

    # The tests' own database calls are plain synchronous calls, made while that loop runs; Django's
    # guard against ORM use inside an event loop does not apply to them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def new_page(browser, base_url):
    """Open a fresh browser profile (its own cookies) on the live server: new_page() -> Page."""
    contexts = []

    def open_page(viewport=DESKTOP):
        context = browser.new_context(base_url=base_url, viewport=viewport)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # confirm() of revoke/delete buttons
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@pytest.fixture
def shoot(browser):
    """shoot(page, name): screenshots of the page's current URL at desktop and phone widths.

    At the phone width the page itself must not scroll sideways: only wide tables and charts may, inside
    their own boxes.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> list[Path]:
        paths = [SCREENSHOTS / f"{_slug(name)}-desktop.png", SCREENSHOTS / f"{_slug(name)}-phone.png"]
        page.screenshot(path=str(paths[0]), full_page=True)
        phone = browser.new_context(viewport=PHONE, storage_state=page.context.storage_state(), is_mobile=True,
                                    device_scale_factor=2)
        try:
            other = phone.new_page()
            other.goto(page.url)
            other.wait_for_load_state("networkidle")
            other.screenshot(path=str(paths[1]), full_page=True)
            width = other.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name} is {width}px wide on a {PHONE['width']}px phone"
        finally:
            phone.close()
        return paths

    return take


def make_user(email: str, org=None, role=Membership.Role.OWNER, password: str = PASSWORD) -> User:
    user = User.objects.create_user(email=email, password=password)
    if org is not None:
        Membership.objects.create(user=user, organization=org, role=role)
    return user


def log_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    assert "/accounts/login/" not in page.url, page.content()[:2000]


@pytest.fixture
def funded_org(transactional_db):
    """An organization with 5 USD of credit and an owner who can log in."""
    org = make_org("tidewater")
    credit_grant(organization=org, amount_micro=5_000_000)
    owner = make_user("owner@tidewater.test", org)
    return org, owner
