"""The device API, mounted at /api/device/v1/ (a trailing slash is accepted too)."""

from django.urls import re_path

from apps.devices.api.device_views import AckView, CheckinView, EnrollView, UnenrollView

app_name = "device-api"

urlpatterns = [
    re_path(r"^enroll/?$", EnrollView.as_view(), name="enroll"),
    re_path(r"^checkin/?$", CheckinView.as_view(), name="checkin"),
    re_path(r"^ack/?$", AckView.as_view(), name="ack"),
    re_path(r"^unenroll/?$", UnenrollView.as_view(), name="unenroll"),
]
