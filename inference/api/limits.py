"""Per-key admission rules checked before anything is held: model allow-list (403) and rate limit (429)."""
import time

from asgiref.sync import sync_to_async
from django.core.cache import cache

from inference.api.errors import APIError

WINDOW_S = 60


def check_model_allowed(key, model_id: str) -> None:
    allowed = key.allowed_models or []
    if allowed and model_id not in allowed:
        raise APIError(403, f"This API key is not allowed to use the model `{model_id}`. It may use: "
                            f"{', '.join(sorted(allowed))}.", type="permission_error", param="model",
                       code="model_not_allowed")


def _count(key_id: int, now: float) -> tuple[int, int]:
    window = int(now // WINDOW_S)
    name = f"ratelimit:key:{key_id}:{window}"
    cache.add(name, 0, timeout=WINDOW_S * 2)
    try:
        count = cache.incr(name)
    except ValueError:  # expired between add and incr
        cache.add(name, 1, timeout=WINDOW_S * 2)
        count = 1
    return count, int((window + 1) * WINDOW_S - now) + 1


async def check_rate_limit(key) -> None:
    """Fixed one-minute windows per key; the cache is shared by every API process when Redis is configured."""
    limit = key.rate_limit_rpm
    if not limit:
        return
    count, retry_after = await sync_to_async(_count)(key.pk, time.time())
    if count > limit:
        raise APIError(429, f"Rate limit reached for this API key: {limit} requests per minute. Please retry "
                            f"in {retry_after} s.", type="requests", code="rate_limit_exceeded",
                       headers={"Retry-After": str(retry_after)})
