"""Per-key admission rules of the API: model allow-list (403), rate limits (429) and spend caps (429).

`RequestLimits` follows one request through the rate limits: the request counted as soon as its
caller is known (before its body is parsed or tokenized, so a request refused later still counts),
its tokens admitted once it is tokenized, the x-ratelimit headers of whatever response it gets, the
tokens given back when it never runs, and the correction to its exact token count once it is settled.
"""
import logging

from asgiref.sync import sync_to_async

from billing.spend import SpendCapReached
from core.counters import CountersUnavailable
from core.errors import APIError
from inference.chat import ratelimit as rate

log = logging.getLogger(__name__)


def check_model_allowed(key, model_id: str) -> None:
    allowed = key.allowed_models or []
    if allowed and model_id not in allowed:
        raise APIError(403, f"This API key is not allowed to use the model `{model_id}`. It may use: "
                            f"{', '.join(sorted(allowed))}.", type="permission_error", param="model",
                       code="model_not_allowed")


def rate_limited(exc: rate.RateLimited) -> APIError:
    limit = exc.limit
    unit = "requests" if limit.kind == rate.REQUESTS else "tokens"
    retry = exc.snapshot.retry_after_s
    if exc.requested > limit.value:
        message = (f"Request too large for the {limit.scope}'s limit of {limit.value} {unit} per minute: it needs "
                   f"{exc.requested} (prompt tokens + max_tokens × n). Shorten the prompt or lower max_tokens.")
    else:
        message = (f"Rate limit reached for {unit} per minute on this {limit.scope}: limit {limit.value}, used "
                   f"{exc.used}, requested {exc.requested}. Please try again in {retry}s.")
    return APIError(429, message, type=limit.kind, code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry), **exc.snapshot.headers()})


def spend_cap_reached(exc: SpendCapReached) -> APIError:
    resets = exc.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return APIError(
        429,
        f"This API key has reached its spend cap of {exc.cap_micro / 1e6:.6f} USD per {exc.window_name} (UTC): "
        f"{exc.spent_micro / 1e6:.6f} USD spent or reserved, and this request may cost up to "
        f"{exc.needed_micro / 1e6:.6f} USD. The cap resets at {resets}.",
        type="insufficient_quota", code="spend_cap_reached", headers={"Retry-After": str(exc.retry_after_s)},
    )


async def rate_headers(key) -> dict[str, str]:
    """The x-ratelimit headers of where the key stands now, taking nothing (none if the counters are down)."""
    try:
        return (await sync_to_async(rate.peek)(key)).headers()
    except CountersUnavailable:
        return {}


class RequestLimits:
    def __init__(self):
        self.key = None
        self.counted = False
        self.admission: rate.Admission | None = None

    async def count_request(self, key) -> None:
        """Take one request from the key's and its organization's requests per minute, or raise 429.

        Called right after authentication, before any work on the body; once per request (again: no-op).
        """
        if self.counted:
            return
        self.key = key
        await self._take(key, requests=1, tokens=0)
        self.counted = True

    async def admit(self, key, *, tokens: int) -> None:
        """Take `tokens` tokens from the key's and its organization's windows, or raise 429."""
        await self.count_request(key)
        self.admission = await self._take(key, requests=0, tokens=tokens)

    async def _take(self, key, *, requests: int, tokens: int) -> rate.Admission:
        try:
            return await sync_to_async(rate.admit)(key, requests=requests, tokens=tokens)
        except rate.RateLimited as exc:
            raise rate_limited(exc) from None
        except CountersUnavailable:
            log.exception("rate limit counters unavailable")
            raise APIError(503, "Rate limits cannot be checked right now; nothing was charged. Please retry.",
                           type="server_error", code="rate_limiter_unavailable", headers={"Retry-After": "5"}) from None

    async def give_back(self) -> None:
        """The admitted request never ran: its tokens no longer count (the request itself still does)."""
        if self.admission is not None:
            await self._correct(0)

    def on_settled(self):
        """What the generation calls with its usage record, to count the tokens the request really used."""
        async def settled(record) -> None:
            await self._correct(record.prompt_tokens + record.completion_tokens)

        return settled

    async def _correct(self, used_tokens: int) -> None:
        try:
            await sync_to_async(rate.correct)(self.admission, used_tokens=used_tokens)
        except CountersUnavailable:
            log.warning("could not correct the tokens counted for a request", exc_info=True)

    async def headers(self, error: APIError | None = None) -> dict[str, str]:
        """The x-ratelimit headers for this request's response (none before it is authenticated)."""
        if error is not None and "x-ratelimit-limit-requests" in error.headers:
            return {}
        if self.admission is not None and error is None:
            return self.admission.snapshot.headers()
        return await rate_headers(self.key) if self.key is not None else {}
