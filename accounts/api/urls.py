from django.urls import path
from accounts.api.views import DocsView, SchemaView, SessionDetailView, SessionListView, SessionMessagesView

urlpatterns = [
    path("sessions", SessionListView.as_view(), name="api-sessions"),
    path("sessions/<str:session_id>", SessionDetailView.as_view(), name="api-session"),
    path("sessions/<str:session_id>/messages", SessionMessagesView.as_view(), name="api-session-messages"),
    path("schema", SchemaView.as_view(), name="api-schema"),
    path("docs", DocsView.as_view(url_name="api-schema"), name="api-docs"),
]
