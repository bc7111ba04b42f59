"""Rate limits (requests and tokens per minute, per key and per organization) and per-key spend caps.

`rate` admits requests against fixed one-minute windows held by `counters` (in-process, or Redis
when REDIS_URL is set); `spend` checks a key's spend cap inside the transaction that places a hold.
Both read time from `clock`, which the tests move.
"""
