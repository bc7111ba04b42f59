"""Money through the live API: concurrent holds and streams cut by the client."""
import threading

import openai
import pytest

from billing.models import Hold
from billing.selectors import ledger_sum_micro
from billing.services import credit_grant
from tests.api.conftest import TINY, stream_then_disconnect, tiny_cost, wait_for_usage
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money

LONG = [{"role": "user", "content": "Tell me a long story about the sea and the ships."}]


def test_two_concurrent_requests_that_together_exceed_the_balance(base_url, client):
    max_tokens = 300
    probe = client.chat.completions.create(model=TINY, messages=LONG, max_tokens=1)
    hold = probe.usage.prompt_tokens * 1 + max_tokens * 2
    carol = make_org("carol")
    credit_grant(organization=carol, amount_micro=2 * hold - 1)  # covers one hold, never two
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=make_key(carol)[1], max_retries=0)
    barrier = threading.Barrier(2)
    outcomes, answers = [], []

    def ask():
        barrier.wait()
        try:
            answers.append(sdk.chat.completions.create(model=TINY, messages=LONG, max_tokens=max_tokens,
                                                       temperature=0))
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200, 402]
    (answer,) = answers
    usage = answer.usage
    charged = tiny_cost(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens)
    assert wait_for_usage(answer.id).cost_micro == charged
    account = carol.credit_account
    account.refresh_from_db()
    assert (account.balance_micro, account.held_micro) == (2 * hold - 1 - charged, 0)
    assert ledger_sum_micro(account=account) == account.balance_micro


def test_a_client_that_disconnects_mid_stream_pays_only_for_what_was_generated(base_url, alice, alice_secret):
    max_tokens = 1500
    body = {"model": TINY, "messages": LONG, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    request_id = stream_then_disconnect(base_url, alice_secret, body)
    # The connection was closed mid-stream.
    record = wait_for_usage(request_id)
    assert record.status == "cancelled" and record.finish_reason == "cancelled"
    assert 3 <= record.completion_tokens < max_tokens
    assert record.cost_micro == tiny_cost(record.prompt_tokens, record.completion_tokens, record.cached_tokens)
    account = alice.credit_account
    account.refresh_from_db()
    assert 1_000_000 - account.balance_micro == record.cost_micro
    assert account.held_micro == 0 and not Hold.objects.filter(status="active").exists()
    assert ledger_sum_micro(account=account) == account.balance_micro


def test_each_tenant_pays_for_its_own_requests(base_url, alice, client):
    bob = make_org("bob", credit_micro=1_000_000)
    bob_client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=make_key(bob)[1], max_retries=0)
    answer = bob_client.chat.completions.create(model=TINY, messages=LONG, max_tokens=3)
    record = wait_for_usage(answer.id)
    assert record.organization == bob
    for org, spent in ((bob, record.cost_micro), (alice, 0)):
        org.credit_account.refresh_from_db()
        assert org.credit_account.balance_micro == 1_000_000 - spent
