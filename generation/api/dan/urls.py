"""Dan's routes: queue a text2img task, and poll it by path or by body."""

from __future__ import annotations

from django.urls import URLPattern, path

from generation.api.dan.views import TaskStatusView, TaskView, Txt2ImgView

urlpatterns: list[URLPattern] = [
    path("api/sd/txt2img", Txt2ImgView.as_view(), name="dan-txt2img"),
    path("api/sd/txt2img/<str:task_id>", TaskView.as_view(), name="dan-task"),
    path("api/sd/task/status", TaskStatusView.as_view(), name="dan-task-status"),
]
