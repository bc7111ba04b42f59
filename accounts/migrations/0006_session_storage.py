"""Chat sessions know their size, and organizations may have their own storage quota."""
import json

from django.db import migrations, models


def message_bytes(message) -> int:
    """accounts.storage.message_bytes as of this migration."""
    out = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return len(json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode())


def measure_sessions(apps, schema_editor):
    ChatSession = apps.get_model("accounts", "ChatSession")
    ChatMessage = apps.get_model("accounts", "ChatMessage")
    sizes = {}
    for message in ChatMessage.objects.order_by().iterator(chunk_size=500):
        sizes[message.session_id] = sizes.get(message.session_id, 0) + message_bytes(message)
    for session_id, size in sizes.items():
        ChatSession.objects.filter(pk=session_id).update(size_bytes=size)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_organization_name_unique_ci'),
    ]

    operations = [
        migrations.AddField(
            model_name='chatsession',
            name='size_bytes',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='organization',
            name='session_storage_quota_bytes',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(measure_sessions, migrations.RunPython.noop),
    ]
