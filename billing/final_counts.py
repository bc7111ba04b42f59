"""A request's final token counts, for the hold sweeper, when the process that would have settled its hold died.

Billing knows nothing of how requests run (it imports no inference). The app that runs them registers a source
when it starts (inference does in its AppConfig.ready: the counts its workers record in Redis), and the sweeper
asks the sources about the holds still active before it falls back to a request's last heartbeat
(billing.liveness). A source is a callable: given request ids, it returns a dict from those it knows the end
of to {"prompt_tokens", "completion_tokens", "cached_tokens", "finish_reason", "finished_at_ms"} (the Unix
time in ms the request ended, or 0). A source that fails is logged and skipped: the sweeper then falls back.
"""
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from billing.models import UsageRecord

log = logging.getLogger(__name__)

Source = Callable[[list[str]], dict[str, dict]]

# The outcome of a request by its finish reason, as the request path records it: a finished or cancelled request
# is charged its prompt and its generated tokens, any other end (an error) only its generated tokens.
_STATUS = {"stop": UsageRecord.Status.COMPLETED, "length": UsageRecord.Status.COMPLETED,
           "cancelled": UsageRecord.Status.CANCELLED}

_sources: list[Source] = []


@dataclass(frozen=True)
class FinalCount:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str
    finished_at_ms: int = 0

    @property
    def status(self) -> str:
        return _STATUS.get(self.finish_reason, UsageRecord.Status.FAILED)

    @classmethod
    def of(cls, data: dict) -> "FinalCount":
        """From a source's dict; ValueError when a count is not a non-negative integer."""
        values = {}
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "finished_at_ms"):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
            values[name] = value
        return cls(finish_reason=str(data.get("finish_reason") or ""), **values)


def register(source: Source) -> None:
    """Ask `source` too (once, however often it is registered)."""
    if source not in _sources:
        _sources.append(source)


def unregister(source: Source) -> None:
    if source in _sources:
        _sources.remove(source)


def lookup(request_ids: Iterable[str]) -> dict[str, FinalCount]:
    """The final counts the sources know of these requests (the first source that knows one wins)."""
    missing = list(dict.fromkeys(request_ids))
    found: dict[str, FinalCount] = {}
    for source in list(_sources):
        if not missing:
            break
        try:
            answers = source(missing)
        except Exception:
            log.warning("the final count source %r failed; holds fall back to their last heartbeat", source,
                        exc_info=True)
            continue
        for request_id in missing:
            data = answers.get(request_id)
            if data is None:
                continue
            try:
                found[request_id] = FinalCount.of(data)
            except (TypeError, ValueError, AttributeError) as exc:
                log.error("unusable final counts of %s from %r: %s", request_id, source, exc)
        missing = [request_id for request_id in missing if request_id not in found]
    return found
