"""The browser reaches the live server: the login page renders and refuses a wrong password."""
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_wrong_password_is_refused_with_a_message(page, shoot):
    make_user("someone@example.test")
    page.goto("/")
    assert page.url.endswith("/accounts/login/?next=/") or page.url.endswith("/accounts/login/")
    shoot(page, "login")
    page.fill("input[name=username]", "someone@example.test")
    page.fill("input[name=password]", "not the password")
    page.click("form button[type=submit]")
    expect(page.locator(".errorlist").first).to_be_visible()  # the refusal, shown on the login page
    assert "/accounts/login/" in page.url
