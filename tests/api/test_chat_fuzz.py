"""Requests generated from our own OpenAPI document never get a 5xx from the chat endpoint, and
every refusal is an OpenAI error object. Valid bodies really run on the tiny model."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode

from billing.models import Hold
from billing.selectors import ledger_sum_micro
from tests.api.conftest import TINY, TINY_HERMES
from tests.factories import make_key, make_org
from tests.fuzzing import SENT as FUZZ_SENT
from tests.fuzzing import documented_names, examples, slip_in_edges

pytestmark = pytest.mark.money

SENT = {"requests": 0, "statuses": {}}


@pytest.fixture
def chat_operations(http):
    document = http.get("/api/schema").json()
    loaded = schemathesis.openapi.from_dict(document)
    return [loaded["/v1/chat/completions"]["POST"], loaded["/api/v1/chat/completions"]["POST"]]


@pytest.fixture
def body_names(http):
    return documented_names(http.get("/api/schema").json(), "post", "/v1/chat/completions")[1]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_chat_requests_never_break_the_server(http, chat_operations, body_names, mode):
    # Limited credit: requests that leave max tokens open to the whole window mostly get a 402.
    org = make_org(f"fuzz-{mode.value}", credit_micro=50_000)
    auth = {"Authorization": f"Bearer {make_key(org)[1]}"}
    base = str(http.base_url).rstrip("/")

    @settings(max_examples=examples(400), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        case = data.draw(data.draw(st.sampled_from(chat_operations)).as_strategy(generation_mode=mode))
        # Hypothesis favours small draws, so "keep the generated value" is the rarer non-zero one.
        if isinstance(case.body, dict) and data.draw(st.integers(0, 9)) != 7:
            case.body["model"] = data.draw(st.sampled_from([TINY, TINY_HERMES]))  # reach past the 404s
            if data.draw(st.integers(0, 9)) != 7:
                case.body.pop("session_id", None)
            if data.draw(st.integers(0, 9)) != 7:  # short answers keep the run quick
                case.body.pop("max_tokens", None)
                case.body["max_completion_tokens"] = data.draw(st.integers(1, 24))
        slip_in_edges(data, case, body_names=body_names)
        response = case.call(base_url=base, headers=auth, timeout=60)
        SENT["requests"] += 1
        FUZZ_SENT[case.operation.path] += 1
        SENT["statuses"][response.status_code] = SENT["statuses"].get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.body, response.text)
        assert response.headers.get("x-request-id")
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro and account.balance_micro >= 0
    assert not Hold.objects.filter(account=account, status=Hold.Status.ACTIVE).exists()
    print(f"\nchat fuzz ({mode.value}): {SENT['requests']} requests so far, statuses {sorted(SENT['statuses'].items())}")
