"""Prompt tokens served from the prefix cache: reported in usage as OpenAI does, and billed at the cached price.

The engine's final event carries `cached_tokens`; here the real backend's final event is made to claim a chosen
count, so the API's plumbing (Generation, collect, stream, settlement) is checked whether or not the engine's cache
is on.
"""
import dataclasses
import json
import uuid

import pytest

from inference.chat import lifecycle
from inference.dispatch import get_backend
from tests.api.conftest import TINY, tiny_cost, wait_for_usage
from tests.api.test_completions import HELLO, charge_of
from tests.factories import make_key, make_org

pytestmark = pytest.mark.money


class CacheReporting:
    """The backend the server uses, with its final events claiming `cached(prompt_tokens)` cached prompt tokens."""

    def __init__(self, backend, cached):
        self._backend = backend
        self._cached = cached

    def __getattr__(self, name):
        return getattr(self._backend, name)

    async def generate(self, spec, request):
        async for event in self._backend.generate(spec, request):
            if event.finished:
                event = dataclasses.replace(event, cached_tokens=self._cached(event.prompt_tokens))
            yield event


@pytest.fixture
def engine_reports(base_url, monkeypatch):
    """engine_reports(cached): from now on every request's final event claims cached(prompt_tokens)."""

    def install(cached):
        backend = CacheReporting(get_backend(), cached)
        monkeypatch.setattr(lifecycle, "get_backend", lambda: backend)

    return install


def ask(http, secret, **body):
    response = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                         json={"model": TINY, "messages": HELLO, "max_tokens": 6, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response


def sse_payloads(response) -> list[dict]:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def unique_messages(text: str) -> list[dict]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def test_usage_always_has_prompt_tokens_details_with_cached_tokens_zero_when_none(http, alice_secret):
    usage = ask(http, alice_secret, messages=unique_messages("first")).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    final = sse_payloads(ask(http, alice_secret, messages=unique_messages("second"), stream=True,
                             stream_options={"include_usage": True}))[-1]
    assert final["choices"] == [] and final["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_a_repeated_prompt_is_served_from_the_prefix_cache_and_charged_less(http, alice, alice_secret):
    # A long shared system prompt, as a few-shot preamble would be: several full cache blocks.
    system = {"role": "system", "content": "You answer in one word. " * 12 + uuid.uuid4().hex}
    first = ask(http, alice_secret, messages=[system, {"role": "user", "content": "Say hello."}]).json()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    spent = charge_of(alice)
    second = ask(http, alice_secret, messages=[system, {"role": "user", "content": "Say goodbye."}]).json()
    usage = second["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < usage["prompt_tokens"] and cached % 16 == 0  # whole blocks of the shared prefix
    record = wait_for_usage(second["id"])
    assert record.cached_tokens == cached
    assert record.cost_micro == charge_of(alice) - spent == tiny_cost(usage["prompt_tokens"],
                                                                      usage["completion_tokens"], cached)


def test_organizations_never_share_cached_prompts(http, alice_secret):
    bob_secret = make_key(make_org("bob", credit_micro=1_000_000))[1]
    messages = unique_messages("You answer in one word. " * 12)
    ask(http, alice_secret, messages=messages)
    assert ask(http, alice_secret, messages=messages).json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert ask(http, bob_secret, messages=messages).json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_a_completion_reports_its_cached_tokens_and_is_charged_the_cached_price(engine_reports, http, alice,
                                                                                alice_secret):
    engine_reports(lambda prompt_tokens: prompt_tokens - 3)
    body = ask(http, alice_secret).json()
    usage = body["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert cached == usage["prompt_tokens"] - 3 > 0
    record = wait_for_usage(body["id"])
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (
        usage["prompt_tokens"], cached, usage["completion_tokens"])
    assert record.cached_input_micro_per_mtok == 500_000  # half the tiny models' input price
    assert record.cost_micro == charge_of(alice) == tiny_cost(usage["prompt_tokens"], usage["completion_tokens"],
                                                              cached)
    assert record.cost_micro < tiny_cost(usage["prompt_tokens"], usage["completion_tokens"])


def test_the_last_chunk_of_a_stream_reports_the_cached_tokens(engine_reports, http, alice, alice_secret):
    engine_reports(lambda prompt_tokens: 5)
    chunks = sse_payloads(ask(http, alice_secret, stream=True, stream_options={"include_usage": True}))
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["prompt_tokens_details"] == {"cached_tokens": 5}
    record = wait_for_usage(chunks[-1]["id"])
    assert record.cached_tokens == 5
    assert record.cost_micro == charge_of(alice) == tiny_cost(usage["prompt_tokens"], usage["completion_tokens"], 5)


def test_a_cached_count_above_the_prompt_counts_as_the_whole_prompt_and_never_fails(engine_reports, http, alice,
                                                                                    alice_secret, caplog):
    engine_reports(lambda prompt_tokens: prompt_tokens + 50)
    with caplog.at_level("ERROR", logger="inference.chat.generation"):
        body = ask(http, alice_secret).json()
    usage = body["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": usage["prompt_tokens"]}
    record = wait_for_usage(body["id"])
    assert record.cached_tokens == record.prompt_tokens == usage["prompt_tokens"]
    assert record.cost_micro == charge_of(alice) == tiny_cost(record.prompt_tokens, record.completion_tokens,
                                                              record.prompt_tokens)
    assert "cached" in caplog.text


def test_the_openai_sdk_reads_the_cached_tokens(engine_reports, client, alice):
    engine_reports(lambda prompt_tokens: prompt_tokens // 2)
    completion = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4, temperature=0)
    details = completion.usage.prompt_tokens_details
    assert isinstance(details.cached_tokens, int) and details.cached_tokens == completion.usage.prompt_tokens // 2
    chunks = list(client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == chunks[-1].usage.prompt_tokens // 2
    assert charge_of(alice) == sum(
        tiny_cost(u.prompt_tokens, u.completion_tokens, u.prompt_tokens // 2) for u in (completion.usage,
                                                                                       chunks[-1].usage))
