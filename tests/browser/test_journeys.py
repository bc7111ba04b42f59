"""What tenant admins do in the dashboard, in a real browser, with screenshots of every page they see."""
import re

import openai
import pytest
from django.conf import settings
from django.core import mail

from accounts.models import APIKey, ChatSession, Membership, Organization
from accounts.sessions import session_append, session_create
from billing.models import UsageRecord
from billing.services import credit_grant
from tests.api.conftest import TINY, wait_for_usage
from tests.browser.conftest import PASSWORD, log_in, make_user
from tests.factories import make_key, make_org

pytestmark = pytest.mark.django_db(transaction=True)


def _sdk(base_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)


def test_sign_up_create_a_key_use_it_see_usage_revoke_it(page, shoot, base_url):
    page.goto("/accounts/signup/")
    shoot(page, "signup")
    page.fill("#id_email", "founder@harbour.test")
    page.click("#signup-submit")
    page.wait_for_url("**/accounts/signup/sent/")
    shoot(page, "signup-sent")
    [email] = mail.outbox  # the link that proves the address, and only then makes the account
    page.goto(re.search(r"https?://[^/\s]+(/accounts/signup/\S+/)", email.body).group(1))
    shoot(page, "signup-password")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("#signup-password-submit")
    page.wait_for_url("**/organizations/new/")
    shoot(page, "organization-create")
    page.fill("input[name=name]", "harbour")
    page.click("form.stacked button[type=submit]")
    page.wait_for_url("**/keys/")
    org = Organization.objects.get(name="harbour")
    assert Membership.objects.get(organization=org).role == "owner"
    credit_grant(organization=org, amount_micro=2_000_000)  # what an operator's `createkey --credit-usd` does

    page.click("#key-create-link")
    page.wait_for_url("**/keys/new/")
    page.click("#key-create-submit")  # no name: a field error, no key
    assert page.locator("#id_name_error").is_visible()
    shoot(page, "key-create-errors")
    page.fill("#id_name", "ci")
    page.click("#key-create-submit")
    page.wait_for_url("**/keys/")
    secret = page.inner_text("#new-key-secret").strip()
    assert secret.startswith("sk-")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy-new-key")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, "key-created")
    page.reload()
    assert page.locator("#new-key-secret").count() == 0  # shown once

    answer = _sdk(base_url, secret).chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hello harbour"}], max_tokens=3)
    record = wait_for_usage(answer.id)
    page.goto("/usage/?range=7")
    row = page.locator(f"#usage-requests tr[data-request-id='{answer.id}']")
    assert row.count() == 1 and TINY in row.inner_text()
    assert page.locator("#chart-tokens g.bar").count() >= 1
    shoot(page, "usage")

    page.goto("/keys/")
    key = APIKey.objects.get(organization=org, name="ci")
    page.click(f"#revoke-key-{key.pk} button")
    page.wait_for_load_state("networkidle")
    assert page.locator(f"#key-{key.pk}").get_attribute("data-status") == "revoked"
    shoot(page, "keys")
    with pytest.raises(openai.AuthenticationError):
        _sdk(base_url, secret).chat.completions.create(model=TINY, messages=[{"role": "user", "content": "x"}],
                                                       max_tokens=1)
    assert UsageRecord.objects.filter(organization=org).count() == 1 and record.cost_micro > 0


def test_the_playground_streams_a_reply_and_saves_the_conversation(page, shoot, funded_org):
    org, owner = funded_org
    log_in(page, owner.email)
    page.goto("/playground/")
    page.wait_for_selector("#pg-status:has-text('Connected')")
    page.select_option("#pg-model", TINY)
    page.fill("#pg-max-tokens", "24")
    page.fill("#pg-system", "You are terse.")
    page.fill("#pg-message", "Tell me about tides.")
    # Record every change of the answer's text as it arrives.
    page.evaluate("""() => {
        window.__updates = [];
        new MutationObserver(() => {
            const text = document.querySelector("[data-testid=turn]:last-child [data-testid=assistant-text]");
            if (text) window.__updates.push(text.textContent.length);
        }).observe(document.querySelector("#pg-transcript"), {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#pg-send")
    usage = page.locator("[data-testid=turn-usage]").last
    usage.wait_for()
    updates = page.evaluate("window.__updates")
    assert len(set(updates)) >= 3, updates  # it grew piece by piece, not in one go
    turn = page.locator("[data-testid=turn]").last
    request_id = turn.get_attribute("data-request-id")
    record = wait_for_usage(request_id)
    assert int(usage.get_attribute("data-cost-micro")) == record.cost_micro
    assert int(usage.get_attribute("data-completion-tokens")) == record.completion_tokens
    assert record.api_key is None and record.organization == org
    assert page.inner_text("[data-testid=assistant-text]").strip()
    shoot(page, "playground")

    page.click("#pg-save")
    page.locator("#pg-session-link").wait_for()
    page.click("#pg-session-link")
    page.wait_for_url(re.compile(r".*/sessions/sess_[^/]+/$"))
    assert page.locator("[data-testid=message]").count() >= 3  # system, user, assistant
    shoot(page, "session-detail")
    page.goto("/sessions/")
    assert page.locator("[data-testid=session-row]").count() == 1
    shoot(page, "sessions")
    page.goto("/billing/")
    assert page.locator("#balance").is_visible()
    shoot(page, "billing")


def test_a_member_sees_keys_but_cannot_revoke_them(new_page, shoot, funded_org):
    org, owner = funded_org
    key, _ = make_key(org, "shared")
    member = make_user("deckhand@tidewater.test", org, role=Membership.Role.MEMBER)

    owner_page = new_page()
    log_in(owner_page, owner.email)
    owner_page.goto("/team/")
    owner_page.fill("#invite-email", "cook@tidewater.test")
    owner_page.select_option("#invite-role", "member")
    owner_page.click("#invite-submit")
    owner_page.wait_for_load_state("networkidle")
    assert owner_page.locator("[data-testid=invitation-row][data-email='cook@tidewater.test']").count() == 1
    shoot(owner_page, "team")

    page = new_page()
    log_in(page, member.email)
    page.goto("/keys/")
    assert page.locator(f"#key-{key.pk}").is_visible()
    assert page.locator("[data-testid=revoke-key]").count() == 0
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(f"/keys/{key.pk}/revoke/", headers={"X-CSRFToken": csrf,
                                                                     "Referer": page.url})
    assert response.status == 403 and "owners and admins" in response.text()  # refused by role, not by CSRF
    key.refresh_from_db()
    assert key.revoked_at is None
    shoot(page, "keys-as-member")


def test_another_tenants_pages_answer_404(page, funded_org):
    org, owner = funded_org
    other = make_org("lighthouse")
    other_key, _ = make_key(other, "theirs")
    other_session = session_create(organization=other, api_key=None, model=TINY)
    session_append(other_session, [{"role": "user", "content": "secret plans"}], request_id="r1")
    log_in(page, owner.email)
    for path in (f"/sessions/{other_session.pk}/",):
        response = page.goto(path)
        assert response.status == 404 and "secret plans" not in page.content()
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": page.url}
    for path in (f"/keys/{other_key.pk}/revoke/", f"/sessions/{other_session.pk}/rename/",
                 f"/sessions/{other_session.pk}/delete/"):
        assert page.request.post(path, headers=headers, form={"title": "mine now"}).status == 404
    other_key.refresh_from_db()
    assert other_key.revoked_at is None and ChatSession.objects.filter(pk=other_session.pk).exists()


def test_an_invited_user_joins_and_switches_between_organizations(new_page, shoot, funded_org):
    from django.core import mail

    org, owner = funded_org
    skiff = make_org("skiff")
    make_key(skiff, "skiff-key")
    make_key(org, "tidewater-key")
    sailor = make_user("sailor@skiff.test", skiff)

    owner_page = new_page()
    log_in(owner_page, owner.email)
    owner_page.goto("/team/")
    owner_page.fill("#invite-email", sailor.email)
    owner_page.select_option("#invite-role", "admin")
    owner_page.click("#invite-submit")
    owner_page.wait_for_load_state("networkidle")
    # The emailed link is on SITE_URL; the test server listens elsewhere, so the browser follows its path.
    link = re.search(rf"{re.escape(settings.SITE_URL)}(/invitations/[^\s/]+/)", mail.outbox[-1].body).group(1)

    page = new_page()
    page.goto("/accounts/password-reset/")
    shoot(page, "password-reset")
    log_in(page, sailor.email)
    page.goto(link)
    shoot(page, "invitation")
    with page.expect_navigation():
        page.click("#invitation-accept")
    assert Membership.objects.get(user=sailor, organization=org).role == "admin"
    page.goto("/keys/")
    assert "tidewater-key" in page.content() and "skiff-key" not in page.content()

    with page.expect_navigation():
        page.select_option("#org-select", str(skiff.pk))  # the switcher submits itself
    page.goto("/keys/")
    assert "skiff-key" in page.content() and "tidewater-key" not in page.content()
    assert page.locator("#org-select option:checked").inner_text().startswith("skiff")
