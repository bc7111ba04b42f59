"""Requests generated from our own OpenAPI document never get a 5xx from the legacy completions and the tokenize
endpoints, every refusal is an OpenAI error object, and the money adds up. Valid bodies really run on the tiny
model."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode

from billing.models import Hold
from billing.selectors import ledger_sum_micro
from tests.api.conftest import TINY
from tests.factories import make_key, make_org
from tests.fuzzing import SENT as FUZZ_SENT
from tests.fuzzing import documented_names, examples, slip_in_edges

pytestmark = pytest.mark.money

PATHS = ["/v1/completions", "/api/v1/completions", "/tokenize", "/detokenize"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_completion_and_tokenize_requests_never_break_the_server(http, mode):
    document = http.get("/api/schema").json()
    loaded = schemathesis.openapi.from_dict(document)
    operations = [loaded[path]["POST"] for path in PATHS]
    names = {path: documented_names(document, "post", path)[1] for path in PATHS}
    org = make_org(f"fuzz-legacy-{mode.value}", credit_micro=50_000)
    auth = {"Authorization": f"Bearer {make_key(org)[1]}"}
    base = str(http.base_url).rstrip("/")
    statuses: dict = {}

    @settings(max_examples=examples(200), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if isinstance(case.body, dict) and data.draw(st.integers(0, 9)) != 7:
            case.body["model"] = TINY  # reach past the 404s
            if "completions" in case.operation.path and data.draw(st.integers(0, 9)) != 7:
                case.body["max_tokens"] = data.draw(st.integers(1, 24))  # short answers keep the run quick
        slip_in_edges(data, case, body_names=names[case.operation.path])
        response = case.call(base_url=base, headers=auth, timeout=60)
        FUZZ_SENT[case.operation.path] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.operation.path, case.body, response.text)
        assert response.headers.get("x-request-id")
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()
    account = org.credit_account
    account.refresh_from_db()
    assert ledger_sum_micro(account=account) == account.balance_micro and account.balance_micro >= 0
    assert not Hold.objects.filter(account=account, status=Hold.Status.ACTIVE).exists()
    assert 200 in statuses or mode == GenerationMode.NEGATIVE, statuses
    print(f"\nlegacy and tokenize fuzz ({mode.value}): statuses {sorted(statuses.items())}")
