"""Wire shapes of the /api endpoints."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ChatSession


@extend_schema_field(OpenApiTypes.INT)
class UnixTimeField(serializers.ReadOnlyField):
    """A datetime as Unix seconds, the way the OpenAI API writes times."""

    def to_representation(self, value):
        return int(value.timestamp())


def _constant(value: str):
    """Schema of a field that always holds `value`."""
    return extend_schema_field({"type": "string", "enum": [value]})


class SessionSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True, help_text="Pass it as `session_id` to /v1/chat/completions.")
    object = serializers.SerializerMethodField()
    title = serializers.CharField(read_only=True, help_text="Set from the first user message, or by a rename.")
    model = serializers.CharField(read_only=True, help_text="The model the session was started with.")
    created_at = UnixTimeField()
    updated_at = UnixTimeField(help_text="The last time messages were added.")
    message_count = serializers.IntegerField(read_only=True)

    @_constant("chat.session")
    def get_object(self, session):
        return "chat.session"


class SessionRenameSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=ChatSession._meta.get_field("title").max_length, allow_blank=False,
                                  trim_whitespace=True)

    def validate(self, attrs):
        if isinstance(self.initial_data, dict):
            unknown = sorted(set(self.initial_data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({unknown[0]: ["unknown or read-only field; only 'title' can be changed."]})
        return attrs


class ToolCallFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(help_text="The arguments as a JSON string.")


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class SessionMessageSerializer(serializers.Serializer):
    object = serializers.SerializerMethodField()
    position = serializers.IntegerField(read_only=True, help_text="0, 1, 2… within the session.")
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant", "tool"], read_only=True)
    content = serializers.CharField(read_only=True, allow_null=True)
    name = serializers.SerializerMethodField()
    tool_calls = serializers.SerializerMethodField()
    tool_call_id = serializers.SerializerMethodField()
    request_id = serializers.CharField(read_only=True, help_text="The completion that added the message.")
    created_at = UnixTimeField()

    @_constant("chat.session.message")
    def get_object(self, message):
        return "chat.session.message"

    def get_name(self, message) -> str | None:
        return message.name or None

    @extend_schema_field(ToolCallSerializer(many=True, allow_null=True))
    def get_tool_calls(self, message):
        return message.tool_calls or None

    def get_tool_call_id(self, message) -> str | None:
        return message.tool_call_id or None


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True, help_text="The parameter at fault, e.g. `title` or `limit`.")
    code = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """An OpenAI error object."""

    error = ErrorDetailSerializer()
