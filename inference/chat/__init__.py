"""A chat completion apart from its transport: the request's meaning, the admission, the payment and the run.

lifecycle.py   admit → pay → run → remember, one release guard (start here)
validation.py  the body as a ChatRequest (request.py), with validate_fields/messages/tools and schema_limits
limits.py      rate limits (ratelimit.py), a key's allowed models and spend cap
prepare.py     the prompt within its bounds (work.py) and what the model can do with it
generation.py  the run, settled exactly once
metrics.py     time to first token; the model an HTTP request's answer is counted under
errors.py      the refusals, as core.errors.APIError
"""
