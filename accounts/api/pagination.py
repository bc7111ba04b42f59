"""Pagination for /api lists: `limit` with `offset`, or `limit` with a 1-based `page`."""
import re

from rest_framework import exceptions
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 2**31 - 1
_INTEGER = re.compile(r"-?[0-9]{1,12}")


def _int_param(request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        raise exceptions.ValidationError({name: [f"must be an integer between {low} and {high}."]})
    return int(raw)


class ListPagination(BasePagination):
    def paginate_queryset(self, queryset, request, view=None):
        self.limit = _int_param(request, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
        offset = _int_param(request, "offset", 0, MAX_OFFSET)
        page = _int_param(request, "page", 1, MAX_OFFSET)
        if page is not None and offset is not None:
            raise exceptions.ValidationError({"page": ["give either page or offset, not both."]})
        self.offset = (page - 1) * self.limit if page is not None else (offset or 0)
        self.count = queryset.count()
        if self.offset >= self.count:
            return []
        return list(queryset[self.offset:self.offset + self.limit])

    def get_paginated_response(self, data):
        return Response({
            "object": "list",
            "data": data,
            "total": self.count,
            "limit": self.limit,
            "offset": self.offset,
            "has_more": self.offset + len(data) < self.count,
        })

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["object", "data", "total", "limit", "offset", "has_more"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": schema,
                "total": {"type": "integer", "minimum": 0, "description": "Items in the whole list."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                "offset": {"type": "integer", "minimum": 0},
                "has_more": {"type": "boolean", "description": "Whether items follow this page."},
            },
        }

    def get_schema_operation_parameters(self, view):
        def param(name, minimum, maximum, description):
            return {"name": name, "required": False, "in": "query", "description": description,
                    "schema": {"type": "integer", "minimum": minimum, "maximum": maximum}}

        return [
            param("limit", 1, MAX_LIMIT, f"Items per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."),
            param("offset", 0, MAX_OFFSET, "Items to skip. Not with `page`."),
            param("page", 1, MAX_OFFSET, "1-based page number, `limit` items a page. Not with `offset`."),
        ]
