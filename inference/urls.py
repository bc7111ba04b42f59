from django.urls import path

from inference.api.catalogue import list_models, retrieve_model
from inference.api.completions import chat_completions
from inference.api.text_completions import completions

urlpatterns = [
    path("chat/completions", chat_completions),
    path("completions", completions),
    path("models", list_models),
    path("models/<path:model_id>", retrieve_model),
]
