from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from accounts.models import ChatSession, Organization


@shared_task(name="accounts.expire_sessions")
def expire_sessions() -> int:
    """Delete the sessions (and their messages) untouched for longer than their organization keeps them."""
    now = timezone.now()
    deleted = 0
    for org_id, days in Organization.objects.filter(session_retention_days__isnull=False).values_list(
            "id", "session_retention_days"):
        _, per_model = ChatSession.objects.filter(organization_id=org_id,
                                                  updated_at__lt=now - timedelta(days=days)).delete()
        deleted += per_model.get(ChatSession._meta.label, 0)
    return deleted
