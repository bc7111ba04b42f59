"""A key's spend cap as a client of the live server sees it: 429 insufficient_quota until the window resets."""
import math

import openai
import pytest

from accounts.models import SpendWindow
from billing.models import Hold
from billing.spend import window_bounds
from tests.api.conftest import TINY
from tests.factories import make_key

pytestmark = pytest.mark.money

HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("window, name", [(SpendWindow.DAY, "per day"), (SpendWindow.WEEK, "per week"),
                                          (SpendWindow.MONTH, "per calendar month")])
def test_a_key_at_its_spend_cap_gets_429_until_the_next_window(base_url, alice, client, counters, clock, window, name):
    prompt = client.chat.completions.create(model=TINY, messages=HI, max_tokens=1).usage.prompt_tokens
    one_request = prompt * 1 + 5 * 2  # the tiny model's price: 1 micro-USD a prompt token, 2 a completion token
    key, secret = make_key(alice, name="capped")
    key.spend_cap_micro, key.spend_cap_window = one_request, window
    key.save(update_fields=["spend_cap_micro", "spend_cap_window"])
    api = openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0)
    api.chat.completions.create(model=TINY, messages=HI, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=5)
    error = refused.value
    assert (error.status_code, error.type, error.code) == (429, "insufficient_quota", "spend_cap_reached")
    assert f"spend cap of {one_request / 1e6:.6f} USD {name}" in error.message
    _, end = window_bounds(window, clock.now_utc())
    assert int(error.response.headers["Retry-After"]) == math.ceil(end.timestamp() - clock.now())
    assert error.response.headers["x-ratelimit-limit-requests"]
    assert not Hold.objects.filter(api_key=key, status=Hold.Status.ACTIVE).exists()
    clock.freeze(end.timestamp() - 1)
    with pytest.raises(openai.RateLimitError):
        api.chat.completions.create(model=TINY, messages=HI, max_tokens=5)
    clock.freeze(end.timestamp())
    assert api.chat.completions.create(model=TINY, messages=HI, max_tokens=5).choices
