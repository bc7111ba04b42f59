"""Chat sessions pages: the organization's sessions, one session's messages, rename and delete.

Sessions are the organization's shared working material: every member may read, rename and delete
them, as any of the organization's API keys may through /api/sessions.
"""
import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from accounts import storage
from accounts.models import ChatMessage, ChatSession
from accounts.sessions import session_get
from accounts.web.decorators import member_required

SESSIONS_PER_PAGE = 20
MESSAGES_PER_PAGE = 100


class SessionRenameForm(forms.Form):
    title = forms.CharField(max_length=ChatSession._meta.get_field("title").max_length,
                            error_messages={"required": "Give the session a title."})


def _session_or_404(request, session_id: str) -> ChatSession:
    session = session_get(request.organization, session_id)
    if session is None:
        raise Http404("No such session in this organization.")
    return session


def _readable_arguments(arguments) -> str:
    """A tool call's arguments (a JSON string) indented for reading; as they are when they do not parse."""
    if isinstance(arguments, str):
        try:
            return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
        except ValueError:
            return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def _tool_calls(message: ChatMessage) -> list[dict]:
    """The assistant's tool calls as id, function name and readable arguments."""
    calls = []
    for call in message.tool_calls or []:
        call = call if isinstance(call, dict) else {"function": {"arguments": call}}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        calls.append({"id": call.get("id") or "", "name": function.get("name") or "",
                      "arguments": _readable_arguments(function.get("arguments", ""))})
    return calls


@require_safe
@member_required
def session_list(request):
    sessions = (ChatSession.objects.filter(organization=request.organization)
                .annotate(message_count=Count("messages")).order_by("-updated_at", "-created_at", "-pk"))
    page = Paginator(sessions, SESSIONS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "dashboard/sessions/list.html", {
        "page": page, "storage_used": storage.used_by(request.organization.pk),
        "storage_quota": storage.quota_of(request.organization), "session_max": settings.CHAT_SESSION_MAX_BYTES})


def _render_detail(request, session: ChatSession, form: SessionRenameForm):
    page = Paginator(ChatMessage.objects.filter(session=session).order_by("position"),
                     MESSAGES_PER_PAGE).get_page(request.GET.get("page"))
    for message in page:
        message.readable_tool_calls = _tool_calls(message)
    return render(request, "dashboard/sessions/detail.html",
                  {"session": session, "page": page, "form": form})


@require_safe
@member_required
def session_detail(request, session_id: str):
    session = _session_or_404(request, session_id)
    return _render_detail(request, session, SessionRenameForm(initial={"title": session.title}))


@require_POST
@member_required
def session_rename(request, session_id: str):
    session = _session_or_404(request, session_id)
    form = SessionRenameForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, session, form)
    ChatSession.objects.filter(pk=session.pk).update(title=form.cleaned_data["title"])
    messages.success(request, "Session renamed.")
    return redirect("session-detail", session_id=session.pk)


@require_POST
@member_required
def session_delete(request, session_id: str):
    session = _session_or_404(request, session_id)
    title = session.title or session.pk
    session.delete()
    messages.success(request, f"Session “{title}” and its messages are deleted.")
    return redirect("sessions")
