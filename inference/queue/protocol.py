"""What the API processes and the inference workers say to each other through Redis.

Django-free: the worker imports this with nothing but its command-line arguments.

Per model M (a worker serves exactly one model):

  inference:model:M:requests       stream, one entry per request: {"request": JSON, "claim_timeout_ms": N}.
                                   Consumer group "workers"; a worker ACKs and XDELs an entry as soon as it
                                   takes it, so XLEN is the number of requests waiting for a worker.
  inference:model:M:workers        sorted set of the workers that accept new requests (score: last beat, ms).
                                   A draining worker leaves it but keeps beating until its last request ends.
  inference:model:M:worker:W       heartbeat of worker W: a JSON description with a PX TTL of
                                   HEARTBEAT_TTL_MS, refreshed every HEARTBEAT_INTERVAL_S. Gone = worker lost.
  inference:model:M:cancel         pub/sub channel: payload = a request id to cancel.

Per request R:

  inference:request:R:claim        who took R: a worker id, or "abandoned"/"cancelled" when the API gave up
                                   first. SET NX on both sides, so exactly one of them wins.
  inference:request:R:events       stream: entry 0-1 {"kind": "claimed", "worker": W}, then 0-2, 0-3...
                                   {"kind": "event", "event": JSON TokenEvent}, ending with the one finished
                                   event. Explicit ids make a retried write idempotent. Expires EVENTS_TTL_S
                                   after its last write (EVENTS_LINGER_S once the API has read it all).
  inference:request:R:cancel       set when the API cancels R (read by a worker that missed the pub/sub
                                   message, e.g. because R was being claimed at that moment).
  inference:request:R:lease        the API process following R renews it every LEASE_RENEW_S with a TTL of
                                   LEASE_TTL_S, from before R is queued until its final event is read (apart
                                   from the response, so a client slow to read never lets it lapse). A request
                                   entry with "lease": "1" is leased: its worker cancels it once the lease is
                                   gone (the API process died), and never starts it if it is gone already.
  inference:request:R:final        the worker's final counts of R (JSON: prompt_tokens, completion_tokens,
                                   cached_tokens, finish_reason, at_ms = Redis time), written with the final
                                   event and kept FINAL_TTL_S; the API process deletes it once it has read the
                                   final event. Left behind, it is what billing's hold sweeper charges R (the
                                   API process that would have settled R's hold died).
"""
from __future__ import annotations

import dataclasses
import json

from inference.engine.types import Constraint, GenerationRequest, SamplingParams, TokenEvent, TokenLogprob

PREFIX = "inference"
GROUP = "workers"

HEARTBEAT_TTL_MS = 2000
HEARTBEAT_INTERVAL_S = 0.5
EVENTS_TTL_S = 300  # an event stream outlives its last write by this much
EVENTS_LINGER_S = 30  # ... and, once the API has read the final event, by only this much
CANCEL_TTL_S = 300
CLAIM_TTL_S = 900
LEASE_TTL_S = 5  # a request whose API process has not renewed its lease for this long is cancelled
LEASE_RENEW_S = 1.0
FINAL_TTL_S = 24 * 3600  # the worker's final counts wait this long for the hold sweeper

KIND_CLAIMED = "claimed"
KIND_EVENT = "event"

# Final events the API synthesizes when no worker delivers one.
ERROR_WORKER_LOST = "worker_lost"  # the worker that took the request stopped beating
ERROR_NOT_CLAIMED = "not_claimed"  # no worker took the request in time
# A final event a worker sends for a leased request whose lease was gone before it started: nothing ran.
ERROR_LEASE_LAPSED = "lease_lapsed"

CLAIM_ABANDONED = "abandoned"
CLAIM_CANCELLED = "cancelled"


def requests_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:requests"


def workers_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:workers"


def heartbeat_key(model_id: str, worker_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:worker:{worker_id}"


def cancel_channel(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:cancel"


def events_key(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:events"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:cancel"


def claim_key(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:claim"


def lease_key(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:lease"


def final_key(request_id: str) -> str:
    return f"{PREFIX}:request:{request_id}:final"


# KEYS[1] requests stream; ARGV[1] queue limit, ARGV[2..] the entry's field/value pairs.
# Atomic, so concurrent API processes cannot push the queue past its limit. Returns nil when full.
ENQUEUE_SCRIPT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""

# KEYS: claim key, events stream, requests stream; ARGV: worker id, group, entry id, claim ttl, events ttl.
# The entry is ACKed and deleted whatever happens; 1 when this worker now owns the request, 0 when the
# API had already given it up (claim key taken). Safe to run again after a lost reply: it answers 1 to
# the owner without writing the "claimed" entry twice.
CLAIM_SCRIPT = """
redis.call('XACK', KEYS[3], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return 1 end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('XADD', KEYS[2], '0-1', 'kind', 'claimed', 'worker', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# -- requests ---------------------------------------------------------------


def encode_params(params: SamplingParams) -> dict:
    """The fields that differ from their defaults (so a field added later stays readable by older workers)."""
    out = {}
    for f in dataclasses.fields(SamplingParams):
        value = getattr(params, f.name)
        if value != _default(f):
            out[f.name] = _plain(value)
    return out


def decode_params(data: dict) -> SamplingParams:
    if not isinstance(data, dict):
        raise ValueError("params must be an object")
    known = {f.name for f in dataclasses.fields(SamplingParams)}
    unknown = sorted(set(data) - known)
    if unknown:
        # Ignoring a parameter would silently change what the client asked for.
        raise ValueError(f"unsupported sampling parameters: {', '.join(unknown)}")
    return SamplingParams(**data)


def encode_request(request: GenerationRequest) -> str:
    if request.token_mask_factory is not None:
        raise ValueError(
            f"request {request.request_id} has a token_mask_factory, which cannot be sent to a worker process"
        )
    data = {
        "request_id": request.request_id,
        "prompt_token_ids": [int(t) for t in request.prompt_token_ids],
        "params": encode_params(request.params),
    }
    if request.constraint is not None:  # compiled by the worker, against its own tokenizer
        data["constraint"] = {"kind": request.constraint.kind, "source": request.constraint.source}
    if request.cache_salt is not None:
        data["cache_salt"] = request.cache_salt
    if request.more_prompts:
        data["more_prompts"] = [[int(t) for t in prompt] for prompt in request.more_prompts]
    return _dumps(data)


def decode_request(raw: str | bytes) -> GenerationRequest:
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        raise ValueError("a request needs a string request_id")
    unknown = sorted(set(data) - _REQUEST_FIELDS)
    if unknown:  # a newer API's request this worker would answer differently from what was asked
        raise ValueError(f"unsupported request fields: {', '.join(unknown)}")
    ids = data.get("prompt_token_ids")
    if not _token_ids(ids):
        raise ValueError("prompt_token_ids must be a list of integers")
    more = data.get("more_prompts", [])
    if not isinstance(more, list) or not all(_token_ids(prompt) for prompt in more):
        raise ValueError("more_prompts must be a list of lists of integers")
    salt = data.get("cache_salt")
    if salt is not None and not isinstance(salt, str):
        raise ValueError("cache_salt must be a string")
    return GenerationRequest(data["request_id"], ids, decode_params(data.get("params", {})),
                             constraint=decode_constraint(data.get("constraint")), cache_salt=salt,
                             more_prompts=tuple(tuple(prompt) for prompt in more))


_REQUEST_FIELDS = {"request_id", "prompt_token_ids", "params", "constraint", "cache_salt", "more_prompts"}


def _token_ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def decode_constraint(data) -> Constraint | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"kind", "source"}:
        raise ValueError("constraint must be an object with exactly a kind and a source")
    return Constraint(data["kind"], data["source"])


def request_id_of(raw: str | bytes) -> str | None:
    """The request id of an entry that may not decode as a whole (to report its failure)."""
    try:
        value = json.loads(raw).get("request_id")
    except (ValueError, AttributeError, TypeError):
        return None
    return value if isinstance(value, str) else None


# -- events -----------------------------------------------------------------

_EVENT_FIELDS = {f.name: f for f in dataclasses.fields(TokenEvent)}


def _encode_logprob(lp: TokenLogprob) -> list:
    out = [lp.token_id, lp.token, lp.logprob, [list(t) for t in lp.top]]
    return out if lp.rank is None else [*out, lp.rank]


def _decode_logprob(item) -> TokenLogprob:
    token_id, token, logprob, top, *rank = item
    return TokenLogprob(int(token_id), str(token), float(logprob),
                        tuple((int(i), str(t), float(p)) for i, t, p in top), int(rank[0]) if rank else None)


def encode_event(event: TokenEvent) -> str:
    out = {"request_id": event.request_id}
    for name, f in _EVENT_FIELDS.items():
        value = getattr(event, name)
        if name == "request_id" or value == _default(f):
            continue
        if name in ("logprobs", "prompt_logprobs"):
            value = [_encode_logprob(lp) for lp in value]
        out[name] = _plain(value)
    return _dumps(out)


def decode_event(raw: str | bytes) -> TokenEvent:
    data = json.loads(raw)
    kwargs = {}
    for name, value in data.items():
        if name not in _EVENT_FIELDS:
            continue  # a newer worker may say more than this API understands
        if name == "token_ids":
            value = tuple(int(t) for t in value)
        elif name in ("logprobs", "prompt_logprobs"):
            value = tuple(_decode_logprob(item) for item in value)
        kwargs[name] = value
    return TokenEvent(**kwargs)


# -- final counts -------------------------------------------------------------


def encode_final(event: TokenEvent, at_ms: int) -> str:
    """A final event's counts, as the worker records them for the hold sweeper."""
    return _dumps({"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                   "cached_tokens": event.cached_tokens, "finish_reason": event.finish_reason or "",
                   "at_ms": int(at_ms)})


def decode_final(raw: str | bytes) -> dict:
    """{"prompt_tokens", "completion_tokens", "cached_tokens", "finish_reason", "at_ms"}; ValueError when it is
    not a final record."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a final record must be an object")
    out = {}
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "at_ms"):
        value = data.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer")
        out[name] = value
    reason = data.get("finish_reason", "")
    if not isinstance(reason, str):
        raise ValueError("finish_reason must be a string")
    out["finish_reason"] = reason
    return out
