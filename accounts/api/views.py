"""/api/sessions: an organization's server-side chat sessions, scoped by its API key."""
from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from drf_spectacular.renderers import (OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer,
                                       OpenApiYamlRenderer2)
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.authentication import APIKeyAuthentication, HasAPIKey
from accounts.api.pagination import ListPagination
from accounts.api.serializers import (ErrorSerializer, SessionMessageSerializer, SessionRenameSerializer,
                                      SessionSerializer)
from accounts.models import ChatMessage, ChatSession
from accounts.sessions import session_get
from core.errors import APIError

TAGS = ["sessions"]
UNAUTHORIZED = OpenApiResponse(ErrorSerializer, description="Missing, unknown, revoked or expired API key.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No session with this id in the key's organization.")
INVALID = OpenApiResponse(ErrorSerializer, description="An invalid parameter; `param` names it.")


class JSONAlways(DefaultContentNegotiation):
    """A view's first renderer, whatever the client's Accept header or ?format says (JSON for the API)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OrganizationAPIView(APIView):
    authentication_classes = [APIKeyAuthentication]
    permission_classes = [HasAPIKey]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    content_negotiation_class = JSONAlways

    @property
    def organization(self):
        return self.request.auth.organization

    def get_session(self, session_id: str) -> ChatSession:
        session = session_get(self.organization, session_id)
        if session is None:
            raise APIError(404, f"No session found with id '{session_id[:100]}'.", code="session_not_found")
        return session

    def paginate(self, queryset, serializer_class):
        paginator = ListPagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


def _with_count(queryset):
    return queryset.annotate(message_count=Count("messages"))


class SessionListView(OrganizationAPIView):
    pagination_class = ListPagination  # read by the schema generator

    @extend_schema(operation_id="listSessions", tags=TAGS, summary="List sessions",
                   description="The organization's sessions, most recently active first.",
                   responses={200: SessionSerializer(many=True), 400: INVALID, 401: UNAUTHORIZED})
    def get(self, request):
        sessions = _with_count(ChatSession.objects.filter(organization=self.organization))
        return self.paginate(sessions.order_by("-updated_at", "-created_at", "-pk"), SessionSerializer)


SESSION_ID = OpenApiParameter("session_id", str, OpenApiParameter.PATH, description="A session id (`sess_...`).")


@extend_schema_view(get=extend_schema(parameters=[SESSION_ID]), patch=extend_schema(parameters=[SESSION_ID]),
                    delete=extend_schema(parameters=[SESSION_ID]))
class SessionDetailView(OrganizationAPIView):
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def _counted(self, session_id: str) -> ChatSession:
        session = self.get_session(session_id)
        session.message_count = session.messages.count()
        return session

    @extend_schema(operation_id="retrieveSession", tags=TAGS, summary="Get a session",
                   responses={200: SessionSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND})
    def get(self, request, session_id: str):
        return Response(SessionSerializer(self._counted(session_id)).data)

    @extend_schema(operation_id="renameSession", tags=TAGS, summary="Rename a session",
                   request=SessionRenameSerializer,
                   responses={200: SessionSerializer, 400: INVALID, 401: UNAUTHORIZED, 404: NOT_FOUND})
    def patch(self, request, session_id: str):
        session = self._counted(session_id)
        rename = SessionRenameSerializer(data=request.data)
        rename.is_valid(raise_exception=True)
        ChatSession.objects.filter(pk=session.pk).update(title=rename.validated_data["title"])
        session.refresh_from_db(fields=["title", "updated_at"])
        return Response(SessionSerializer(session).data)

    @extend_schema(operation_id="deleteSession", tags=TAGS, summary="Delete a session and its messages",
                   responses={204: OpenApiResponse(description="Deleted."), 401: UNAUTHORIZED, 404: NOT_FOUND})
    def delete(self, request, session_id: str):
        self.get_session(session_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(get=extend_schema(parameters=[SESSION_ID]))
class SessionMessagesView(OrganizationAPIView):
    pagination_class = ListPagination

    @extend_schema(operation_id="listSessionMessages", tags=TAGS, summary="List a session's messages",
                   description="Oldest first, in the order a request naming the session replays them.",
                   responses={200: SessionMessageSerializer(many=True), 400: INVALID, 401: UNAUTHORIZED,
                              404: NOT_FOUND})
    def get(self, request, session_id: str):
        session = self.get_session(session_id)
        messages = ChatMessage.objects.filter(session=session).order_by("position")
        return self.paginate(messages, SessionMessageSerializer)


class SchemaView(SpectacularAPIView):
    """The OpenAPI document: JSON unless `?format=yaml` (or an Accept header) asks for YAML."""

    renderer_classes = [OpenApiJsonRenderer2, OpenApiJsonRenderer, OpenApiYamlRenderer2, OpenApiYamlRenderer]

    def _get_version_parameter(self, request):
        return None  # one version; a client's ?version= would only end up in a response header


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI for the schema, with its assets served from this server (drf-spectacular-sidecar); its start-up
    script is served at `?script` rather than inline, as the Content-Security-Policy asks."""

    template_name = "api/swagger_ui.html"

    content_negotiation_class = JSONAlways  # the page is HTML, whatever Accept or ?format says
