"""The chat's refusals and failures: small factories of core.errors.APIError (rendered by core.errors)."""
from core.errors import DATABASE, DATABASE_UNAVAILABLE, APIError, outage_error


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def insufficient_credit(needed_micro: int, available_micro: int) -> APIError:
    return APIError(
        402,
        f"Insufficient credit: this request may cost up to {needed_micro / 1e6:.6f} USD and "
        f"{max(available_micro, 0) / 1e6:.6f} USD is available. Top up, or lower max_tokens.",
        type="insufficient_quota",
        code="insufficient_credit",
    )


def unavailable(message: str, retry_after: int = 5) -> APIError:
    return APIError(
        503, message, type="server_error", code="model_unavailable", headers={"Retry-After": str(retry_after)}
    )


def server_error(message: str = "The model failed while generating. You were not charged for the prompt.") -> APIError:
    return APIError(500, message, type="server_error", code="generation_failed")


def no_capacity(message: str, code: str, retry_after: int) -> APIError:
    """No inference worker can take the request now (none live, or the queue is full); nothing was charged."""
    return APIError(503, message, type="server_error", code=code, headers={"Retry-After": str(retry_after)})


def backend_unavailable(exc) -> APIError:
    """The 503 of a backend that cannot take the request (inference.availability): no worker, a full queue, or a
    model that failed to load."""
    from inference.availability import NoCapacity

    if isinstance(exc, NoCapacity):
        return no_capacity(str(exc), exc.code, exc.retry_after)
    return unavailable(str(exc))


# Final events a queue backend makes up when no worker delivered one (TokenEvent.error_code).
_WORKER_FAILURES = {
    "worker_lost": ("The inference worker running this request stopped, or the inference queue lost it. You were "
                    "charged only for the {tokens} completion tokens generated before that, not for the prompt. "
                    "Please retry.", 1),
    "not_claimed": ("No inference worker took this request in time. You were not charged. Please retry.", 5),
}


def generation_failed(event) -> APIError:
    """The error for a final event that is neither "stop" nor "length"."""
    if getattr(event, "error_code", None) == "invalid_grammar":  # the engine could not compile the constraint
        return invalid(f"The output cannot be constrained as asked ('response_format', 'structured_outputs' or "
                       f"the forced tool call): {event.error}", None, "invalid_json_schema")
    if getattr(event, "error_code", None) == DATABASE_UNAVAILABLE:  # generated, but its charge could not be recorded
        return outage_error(DATABASE)
    failure = _WORKER_FAILURES.get(getattr(event, "error_code", None))
    if failure is None:
        return server_error()
    message, retry_after = failure
    return no_capacity(message.format(tokens=event.completion_tokens), event.error_code, retry_after)
