from django.urls import path

from inference.web import views

urlpatterns = [
    path("playground/", views.playground, name="playground"),
]
