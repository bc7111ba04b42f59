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


def test_an_unknown_model_id_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_listing_models_needs_a_key(base_url):
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
