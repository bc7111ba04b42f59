"""Migrations that change existing data: they leave every row fitting the new rules."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.storage import message_bytes

pytestmark = pytest.mark.money

BEFORE = [("accounts", "0004_invitations")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_names_that_differ_only_in_case_are_renamed_and_sessions_measured():
    try:
        apps = migrate(BEFORE)
        Organization = apps.get_model("accounts", "Organization")
        ChatSession = apps.get_model("accounts", "ChatSession")
        ChatMessage = apps.get_model("accounts", "ChatMessage")
        acme, shouting, other = (Organization.objects.create(name=n) for n in ("Acme", "ACME", "Globex"))
        taken = Organization.objects.create(name=f"acme ({shouting.pk})")  # the name the second one would get
        long = Organization.objects.create(name="a" * 100)
        long_twin = Organization.objects.create(name="A" * 100)
        session = ChatSession.objects.create(organization=acme, id="sess_1")
        stored = [{"role": "user", "content": "Bonjour, ça va ?"},
                  {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                         "function": {"name": "f", "arguments": "{}"}}]}]
        for position, m in enumerate(stored):
            ChatMessage.objects.create(session=session, position=position, role=m["role"], content=m["content"],
                                       tool_calls=m.get("tool_calls"))
    finally:
        apps = migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    Organization = apps.get_model("accounts", "Organization")
    names = dict(Organization.objects.values_list("pk", "name"))
    assert names[acme.pk] == "Acme" and names[other.pk] == "Globex" and names[long.pk] == "a" * 100
    assert names[taken.pk] == f"acme ({shouting.pk})"
    assert names[shouting.pk].startswith("ACME (") and names[shouting.pk] != names[taken.pk]
    assert names[long_twin.pk] == "A" * (100 - len(f" ({long_twin.pk})")) + f" ({long_twin.pk})"
    assert len({name.lower() for name in names.values()}) == len(names)
    ChatSession = apps.get_model("accounts", "ChatSession")
    assert ChatSession.objects.get(pk="sess_1").size_bytes == sum(message_bytes(m) for m in stored)


@pytest.mark.django_db(transaction=True)
def test_messages_already_holding_the_escape_character_read_back_unchanged_after_nul_safe_fields():
    escaped = "private \ue000 use \ue0000 and \ue000e"
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"s\": \"\ue0000\"}"}}]
    try:
        apps = migrate([("accounts", "0006_session_storage")])
        Organization = apps.get_model("accounts", "Organization")
        ChatSession = apps.get_model("accounts", "ChatSession")
        ChatMessage = apps.get_model("accounts", "ChatMessage")
        session = ChatSession.objects.create(organization=Organization.objects.create(name="acme"), id="sess_1")
        ChatMessage.objects.create(session=session, position=0, role="user", content=escaped)
        ChatMessage.objects.create(session=session, position=1, role="assistant", content=None, tool_calls=call)
        ChatMessage.objects.create(session=session, position=2, role="user", content="plain")
    finally:
        apps = migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    ChatMessage = apps.get_model("accounts", "ChatMessage")
    assert list(ChatMessage.objects.order_by("position").values_list("content", "tool_calls")) == [
        (escaped, None), (None, call), ("plain", None)]
