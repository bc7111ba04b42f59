from django.urls import path

from inference.web import staff, views

urlpatterns = [
    path("playground/", views.playground, name="playground"),
    path("staff/workers/", staff.workers_page, name="staff_workers"),  # the operators' worker and queue view
]
