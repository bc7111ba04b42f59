"""The admin's drill-down by date (`date_hierarchy`) refusing days past Python's calendar instead of failing.

Django 5.2.19 computes the end of `?created_at__year=9999` (year 10000) outside its own check, and an
over-long year overflows: both are 500s (Django ticket #37357, fixed after that release). Here they are what
any other bad lookup is: the list again, with "?e=1".
"""
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList


class BoundedDateChangeList(ChangeList):
    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as exc:  # only lookups parsed from the query string get here
            raise IncorrectLookupParameters(exc) from exc


class BoundedDateHierarchyMixin:
    """For a ModelAdmin with `date_hierarchy`."""

    def get_changelist(self, request, **kwargs):
        return BoundedDateChangeList
