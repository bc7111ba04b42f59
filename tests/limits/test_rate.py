"""Admission against the key's and the organization's windows, the header values, the correction afterwards."""
import pytest

from accounts.models import APIKey, Organization
from inference.chat import ratelimit as rate


def key_of(org_id=1, key_id=1, *, rpm=None, tpm=None, org_rpm=None, org_tpm=None) -> APIKey:
    org = Organization(pk=org_id, name=f"org{org_id}", rate_limit_rpm=org_rpm, rate_limit_tpm=org_tpm)
    return APIKey(pk=key_id, organization=org, name="k", rate_limit_rpm=rpm, rate_limit_tpm=tpm)


@pytest.mark.parametrize("seconds, shown", [(59.2, "1m0s"), (58.01, "59s"), (1, "1s"), (0.2, "1s"), (0, "0s"),
                                            (60, "1m0s"), (61, "1m1s"), (360, "6m0s")])
def test_reset_durations_are_written_like_openai(seconds, shown):
    assert rate.duration(seconds) == shown


def test_an_organization_without_limits_of_its_own_gets_the_operators_defaults(settings):
    settings.ORG_RATE_LIMIT_RPM, settings.ORG_RATE_LIMIT_TPM = 70, 7000
    limits = rate.limits_of(key_of())
    assert [(lim.scope, lim.kind, lim.value) for lim in limits] == [
        ("organization", "requests", 70), ("organization", "tokens", 7000)]
    limits = rate.limits_of(key_of(rpm=3, tpm=300, org_rpm=30, org_tpm=0))
    assert [(lim.scope, lim.kind, lim.value) for lim in limits] == [
        ("API key", "requests", 3), ("API key", "tokens", 300), ("organization", "requests", 30),
        ("organization", "tokens", 0)]


def test_headers_report_the_most_restrictive_limit_of_each_kind(counters, clock):
    key = key_of(rpm=5, tpm=10_000, org_rpm=100, org_tpm=1000)
    admission = rate.admit(key, tokens=300)
    assert admission.snapshot.headers() == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "59s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "700", "x-ratelimit-reset-tokens": "59s",
    }
    clock.advance(30)
    assert rate.peek(key).headers()["x-ratelimit-reset-requests"] == "29s"


def test_a_refusal_names_the_limit_and_takes_nothing(counters, clock):
    key = key_of(tpm=500, org_rpm=10)
    rate.admit(key, tokens=400)
    with pytest.raises(rate.RateLimited) as refused:
        rate.admit(key, tokens=101)
    assert (refused.value.limit.scope, refused.value.limit.kind, refused.value.limit.value) == ("API key", "tokens", 500)
    assert (refused.value.used, refused.value.requested) == (400, 101)
    assert refused.value.snapshot.retry_after_s == 59
    snapshot = rate.peek(key)
    assert snapshot.requests == (10, 9) and snapshot.tokens == (500, 100)  # the refused request took no request


def test_the_token_counters_are_corrected_to_what_was_used_within_the_window(counters, clock):
    key = key_of(tpm=1000)
    admission = rate.admit(key, tokens=600)
    assert rate.correct(admission, used_tokens=250) is True
    assert rate.peek(key).tokens == (1000, 750)
    rate.admit(key, tokens=750)  # the corrected room can be used again


def test_no_correction_reaches_into_the_next_window(counters, clock):
    key = key_of(tpm=1000)
    admission = rate.admit(key, tokens=600)
    clock.advance(60)
    rate.admit(key, tokens=100)
    assert rate.correct(admission, used_tokens=0) is False
    assert rate.peek(key).tokens == (1000, 900)


def test_keys_of_one_organization_share_its_limits(counters, clock):
    first, second = key_of(key_id=1, org_rpm=3), key_of(key_id=2, org_rpm=3)
    rate.admit(first, tokens=1)
    rate.admit(second, tokens=1)
    rate.admit(first, tokens=1)
    with pytest.raises(rate.RateLimited) as refused:
        rate.admit(second, tokens=1)
    assert refused.value.limit.scope == "organization"
    other_org = key_of(org_id=2, key_id=3, org_rpm=3)
    assert rate.admit(other_org, tokens=1).snapshot.requests == (3, 2)
