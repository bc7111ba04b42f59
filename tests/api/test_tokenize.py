"""vLLM's /tokenize and /detokenize: the token ids a chat completion would be charged for, free but counted."""
import pytest

from billing.models import LedgerEntry
from tests.api.conftest import TINY
from tests.factories import make_key

pytestmark = pytest.mark.money

HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."}]


@pytest.fixture
def auth(alice_secret):
    return {"Authorization": f"Bearer {alice_secret}"}


def test_a_chat_tokenizes_to_the_prompt_a_completion_is_charged_for(http, auth, client, tokenizer):
    answer = http.post("/tokenize", json={"model": TINY, "messages": HI, "return_token_strs": True}, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tokens"] == tokenizer.encode_chat(HI) and body["count"] == len(body["tokens"])
    assert body["token_strs"] == tokenizer.hf_tokenizer.convert_ids_to_tokens(body["tokens"])
    assert body["max_model_len"] == client.models.retrieve(TINY).max_model_len
    completion = client.chat.completions.create(model=TINY, messages=HI, max_tokens=1)
    assert completion.usage.prompt_tokens == body["count"]
    without = http.post("/tokenize", json={"model": TINY, "messages": HI, "add_generation_prompt": False},
                        headers=auth).json()
    assert without["count"] < body["count"] and without["token_strs"] is None


def test_a_prompt_tokenizes_and_detokenizes_back(http, auth, tokenizer):
    text = "The sea was calm, the ships were slow."
    body = http.post("/tokenize", json={"model": TINY, "prompt": text}, headers=auth).json()
    assert body["tokens"] == tokenizer.hf_tokenizer.encode(text)
    back = http.post("/detokenize", json={"model": TINY, "tokens": body["tokens"]}, headers=auth)
    assert back.status_code == 200 and back.json() == {"prompt": tokenizer.hf_tokenizer.decode(body["tokens"])}


def test_tokenizing_charges_nothing_and_counts_against_the_keys_requests_per_minute(http, alice):
    key, secret = make_key(alice, name="counted")
    key.rate_limit_rpm = 2
    key.save(update_fields=["rate_limit_rpm"])
    headers = {"Authorization": f"Bearer {secret}"}
    entries = LedgerEntry.objects.count()
    codes = [http.post("/tokenize", json={"model": TINY, "prompt": "hi"}, headers=headers).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]
    assert LedgerEntry.objects.count() == entries


@pytest.mark.parametrize("path, body, status, param", [
    ("/tokenize", {"model": TINY}, 400, "messages"),
    ("/tokenize", {"model": TINY, "messages": HI, "prompt": "x"}, 400, "prompt"),
    ("/tokenize", {"model": TINY, "prompt": "x", "tools": []}, 400, "tools"),
    ("/tokenize", {"model": TINY, "prompt": 5}, 400, "prompt"),
    ("/tokenize", {"model": TINY, "messages": HI, "max_tokens": 5}, 400, "max_tokens"),
    ("/tokenize", {"model": TINY, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ("/tokenize", {"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ("/tokenize", {"model": TINY, "prompt": "x" * 2_000_001}, 400, "prompt"),
    ("/detokenize", {"model": TINY}, 400, "tokens"),
    ("/detokenize", {"model": TINY, "tokens": [1, -1]}, 400, "tokens[1]"),
    ("/detokenize", {"model": TINY, "tokens": [10**9]}, 400, "tokens[0]"),
    ("/detokenize", {"model": TINY, "tokens": "1 2"}, 400, "tokens"),
])
def test_bad_bodies_get_a_clear_error_naming_the_field(http, auth, settings, path, body, status, param):
    settings.API_MAX_PROMPT_CHARS = 2_000_000
    answer = http.post(path, json=body, headers=auth)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param and answer.headers["x-request-id"]


def test_tokenizing_needs_a_key_and_a_post(http, auth):
    assert http.post("/tokenize", json={"model": TINY, "prompt": "x"}).status_code == 401
    assert http.get("/tokenize", headers=auth).status_code == 405
