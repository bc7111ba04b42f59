"""Every response carries an x-request-id, so any answer can be traced in the logs."""
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class RequestIdMiddleware:
    """Adds x-request-id to responses that do not set their own (the chat endpoint sets its completion id)."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._async:
            return self._acall(request)
        return self._tag(self.get_response(request))

    async def _acall(self, request):
        return self._tag(await self.get_response(request))

    @staticmethod
    def _tag(response):
        if not response.has_header("x-request-id"):
            response["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return response
