"""Every dashboard page, the playground included, works under the Content-Security-Policy: no violation, no console
error, no script error, in a real browser."""
import re

import openai
import pytest

from accounts.models import Invitation, Membership
from accounts.sessions import session_append, session_create
from accounts.web.signup import signup_token
from tests.api.conftest import TINY, wait_for_usage
from tests.browser.conftest import log_in, make_user
from tests.factories import make_key

pytestmark = pytest.mark.django_db(transaction=True)

# Recorded from the first script that runs in every page, before the page's own.
WATCH = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__problems.push(`CSP ${event.violatedDirective} refused ${event.blockedURI || "inline"} ` +
                         `(${event.sourceFile}:${event.lineNumber})`);
});
"""


@pytest.fixture
def watched(new_page):
    """A page that collects CSP violations, console errors and uncaught script errors: (page, problems)."""
    page = new_page()
    problems = []
    page.add_init_script(WATCH)
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    policies = {}
    page.on("response", lambda response: response.request.resource_type == "document"
            and policies.__setitem__(response.url, response.headers.get("content-security-policy")))

    def visit(path: str):
        response = page.goto(path)
        assert response.status < 400, (path, response.status)
        page.wait_for_load_state("networkidle")
        return response

    def check(where: str):
        seen = problems + page.evaluate("window.__problems")
        assert seen == [], f"{where}: {seen}"
        missing = [url for url, policy in policies.items() if not policy or "script-src 'self'" not in policy]
        assert missing == [], f"pages without the policy: {missing}"

    page.visit, page.check = visit, check
    return page


def test_the_signed_out_pages_work_under_the_policy(watched, funded_org):
    org, owner = funded_org
    invitation = Invitation.objects.create(organization=org, email="new@tidewater.test", invited_by=owner)
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/signup/sent/",
                 f"/accounts/signup/{signup_token('new@tidewater.test')}/", "/accounts/password-reset/",
                 f"/invitations/{invitation.token}/"):
        watched.visit(path)
        watched.check(path)
    log_in(watched, owner.email)  # the log-in form posts and redirects under the policy too
    watched.check("log-in")


def test_every_dashboard_page_works_under_the_policy(watched, funded_org, base_url):
    org, owner = funded_org
    make_user("deckhand@tidewater.test", org, role=Membership.Role.MEMBER)
    key, secret = make_key(org, "backend")
    answer = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0).chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
    wait_for_usage(answer.id)  # the usage page has a chart and share bars to draw
    session = session_create(organization=org, api_key=key, model=TINY)
    session_append(session, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                   request_id="req_csp")
    log_in(watched, owner.email)
    for path in ("/", "/usage/", "/usage/?range=7", "/keys/", "/keys/new/", f"/keys/{key.pk}/limits/",
                 "/sessions/", f"/sessions/{session.pk}/", "/billing/", "/team/", "/organizations/new/"):
        watched.visit(path)
        watched.check(path)
        if path == "/usage/":  # its chart and share bars are drawn without style attributes
            assert watched.locator("[data-testid=share]").count() >= 1

    # Scripts of the pages run: a new key's page copies its secret and puts the list's address in the bar.
    watched.visit("/keys/new/")
    watched.fill("#id_name", "ci")
    watched.click("#key-create-submit")
    watched.wait_for_url("**/keys/")
    watched.context.grant_permissions(["clipboard-read", "clipboard-write"])
    watched.click("#copy-new-key")
    assert watched.evaluate("navigator.clipboard.readText()") == watched.inner_text("#new-key-secret").strip()
    watched.reload()
    assert watched.locator("#new-key-secret").count() == 0
    watched.check("a new key")


def test_the_playground_streams_and_saves_under_the_policy(watched, funded_org):
    org, owner = funded_org
    log_in(watched, owner.email)
    watched.visit("/playground/")
    watched.wait_for_selector("#pg-status:has-text('Connected')")  # the WebSocket connect-src allows
    watched.select_option("#pg-model", TINY)
    watched.fill("#pg-max-tokens", "8")
    watched.fill("#pg-message", "Tell me about tides.")
    watched.click("#pg-send")
    watched.locator("[data-testid=turn-usage]").last.wait_for()
    assert watched.inner_text("[data-testid=assistant-text]").strip()
    watched.click("#pg-save")
    watched.locator("#pg-session-link").wait_for()
    watched.click("#pg-session-link")
    watched.wait_for_url(re.compile(r".*/sessions/sess_[^/]+/$"))
    watched.wait_for_load_state("networkidle")
    watched.check("the playground")


def test_the_operators_pages_and_the_api_docs_work_under_the_policy(watched, funded_org):
    org, owner = funded_org
    owner.is_staff = owner.is_superuser = True
    owner.save()
    log_in(watched, owner.email)
    for path in ("/admin/", "/admin/accounts/organization/", f"/admin/accounts/organization/{org.pk}/change/",
                 "/staff/billing/", "/api/docs"):
        watched.visit(path)
        watched.check(path)
    assert watched.locator(".swagger-ui .opblock").count() > 0  # the docs' scripts ran and drew the endpoints
