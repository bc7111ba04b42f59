import openai
import pytest

from tests.api.conftest import TINY

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_model_list_names_the_served_models(client):
    models = client.models.list()
    assert TINY in [m.id for m in models.data]
    assert all(m.object == "model" and m.owned_by for m in models.data)


def test_a_model_can_be_retrieved_by_id(client):
    model = client.models.retrieve(TINY)
    assert (model.id, model.object) == (TINY, "model")


def test_a_model_reports_the_context_window_requests_are_checked_against(client):
    window = client.models.retrieve(TINY).max_model_len
    assert window == {m.id: m.max_model_len for m in client.models.list().data}[TINY]
    messages = [{"role": "user", "content": "Hi"}]
    probe = client.chat.completions.create(model=TINY, messages=messages, max_tokens=1)
    prompt = probe.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=TINY, messages=messages, max_tokens=window - prompt + 1)
    assert refused.value.code == "context_length_exceeded" and f"is {window} tokens" in refused.value.message
    # At the window exactly the request is admitted (read its first chunk only: it could run to the window).
    with client.chat.completions.create(model=TINY, messages=messages, max_tokens=window - prompt,
                                        stream=True) as stream:
        assert next(iter(stream)).choices[0].delta.role == "assistant"


def test_an_unknown_model_id_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_listing_models_needs_a_key(base_url):
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
