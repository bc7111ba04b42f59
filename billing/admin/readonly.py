from django.contrib import admin

from accounts.admin_dates import BoundedDateHierarchyMixin


class ReadOnlyAdmin(BoundedDateHierarchyMixin, admin.ModelAdmin):
    """Money rows change only through billing.services, never by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
