"""Session messages keep NUL characters (core.fields): rows already holding the escape character are
re-encoded first, so that they read back as they were written."""
from django.db import migrations

import core.fields

ESCAPE = core.fields.ESCAPE


def _has_escape(value) -> bool:
    if isinstance(value, str):
        return ESCAPE in value
    if isinstance(value, list):
        return any(_has_escape(v) for v in value)
    if isinstance(value, dict):
        return any(_has_escape(k) or _has_escape(v) for k, v in value.items())
    return False


def encode_escapes(apps, schema_editor):
    """Runs while the fields are still plain: reads and writes the stored text as it is."""
    ChatMessage = apps.get_model("accounts", "ChatMessage")
    for pk, content in ChatMessage.objects.filter(content__contains=ESCAPE).values_list("pk", "content").iterator():
        ChatMessage.objects.filter(pk=pk).update(content=core.fields.encode(content))
    calls = ChatMessage.objects.filter(tool_calls__isnull=False).values_list("pk", "tool_calls")
    for pk, tool_calls in calls.iterator(chunk_size=500):
        if _has_escape(tool_calls):
            ChatMessage.objects.filter(pk=pk).update(
                tool_calls=core.fields.map_strings(tool_calls, core.fields.encode))


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_session_storage'),
    ]

    operations = [
        migrations.RunPython(encode_escapes, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='chatmessage',
            name='content',
            field=core.fields.NulSafeTextField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='chatmessage',
            name='tool_calls',
            field=core.fields.NulSafeJSONField(blank=True, null=True),
        ),
    ]
