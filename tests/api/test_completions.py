"""Chat completions through the official OpenAI SDK against a live server."""
import pytest

from accounts.models import Organization
from billing.models import Hold
from billing.selectors import ledger_sum_micro
from tests.api.conftest import TINY, TINY_GREEDY, tiny_cost, wait_for_usage

pytestmark = pytest.mark.money

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the world."}]


def charge_of(org: Organization) -> int:
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro
    assert account.held_micro == 0
    return 1_000_000 - account.balance_micro


def test_a_completion_is_answered_in_openai_shape_and_charged_exactly(client, alice, tokenizer):
    completion = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=12, temperature=0)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == TINY and completion.created > 1_700_000_000
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"  # the tiny model never ends a greedy answer by itself
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(tokenizer.encode_chat(HELLO)), 12)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    cached = usage.prompt_tokens_details.cached_tokens
    assert charge_of(alice) == tiny_cost(usage.prompt_tokens, usage.completion_tokens, cached)
    record = wait_for_usage(completion.id)
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens, record.status) == (
        usage.prompt_tokens, cached, usage.completion_tokens, "completed")
    assert record.cost_micro == charge_of(alice)


def test_max_tokens_ends_the_answer_with_length(client):
    completion = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=1, temperature=0)
    assert completion.usage.completion_tokens == 1
    assert completion.choices[0].finish_reason == "length"
    longer = client.chat.completions.create(model=TINY, messages=HELLO, max_completion_tokens=3, temperature=0)
    assert (longer.usage.completion_tokens, longer.choices[0].finish_reason) == (3, "length")


def test_a_stream_carries_the_same_answer_and_usage(client, alice):
    params = dict(model=TINY, messages=HELLO, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**params)
    before = charge_of(alice)
    chunks = list(client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    # The same prompt again: its full blocks come from the prefix cache, at half the input price.
    cached = chunks[-1].usage.prompt_tokens_details.cached_tokens
    assert whole.usage.prompt_tokens_details.cached_tokens == 0 < cached < whole.usage.prompt_tokens
    assert charge_of(alice) - before == tiny_cost(whole.usage.prompt_tokens, whole.usage.completion_tokens, cached)


def test_a_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4, stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_same_seed_gives_the_same_answer(client):
    params = dict(model=TINY, messages=HELLO, max_tokens=16, temperature=1.0, top_p=0.9)
    first = client.chat.completions.create(**params, seed=1234)
    second = client.chat.completions.create(**params, seed=1234)
    assert first.choices[0].message.content == second.choices[0].message.content
    others = {client.chat.completions.create(**params, seed=s).choices[0].message.content for s in range(5)}
    assert len(others) == 5, "different seeds should sample different answers"


def test_a_stop_string_is_never_returned(client):
    free = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=16, temperature=0)
    text = free.choices[0].message.content
    if len(text) < 4:
        pytest.skip("the tiny model's answer is too short to cut")
    stop = text[2:4]
    cut = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_the_response_carries_its_request_id(client):
    raw = client.chat.completions.with_raw_response.create(model=TINY, messages=HELLO, max_tokens=2)
    assert raw.headers["x-request-id"] == raw.parse().id


def test_no_hold_is_left_behind(client, alice):
    for _ in range(3):
        client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=3)
    assert not Hold.objects.filter(status="active").exists()
    charge_of(alice)


def test_omitted_sampling_parameters_come_from_the_models_generation_config(client):
    greedy = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=12, temperature=0)
    defaulted = {client.chat.completions.create(model=TINY_GREEDY, messages=HELLO, max_tokens=12)
                 .choices[0].message.content for _ in range(3)}
    assert defaulted == {greedy.choices[0].message.content}
    sampled = {client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=12, seed=s)
               .choices[0].message.content for s in range(3)}
    assert len(sampled) == 3, "without a generation_config default the temperature is 1"
