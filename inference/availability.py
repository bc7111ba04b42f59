"""Why a backend (in-process or the worker queue) cannot take a request now; the API answers 503."""


class ModelUnavailable(Exception):
    """The model cannot serve requests right now (not loaded, failed to load)."""


class NoCapacity(ModelUnavailable):
    """No worker can take the request now: none is live ("no_worker"), or too many wait ("queue_full")."""

    def __init__(self, message: str, *, code: str, retry_after: int):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
