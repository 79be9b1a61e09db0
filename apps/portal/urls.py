"""The self-service portal: an end user's own devices, certificates and uploads."""

from django.urls import path

from apps.portal import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign-out"),
    path("password/", views.PasswordChange.as_view(), name="password-change"),
    path("devices/", views.devices, name="devices"),
    path("certificates/", views.certificates, name="certificates"),
    path(
        "certificates/<int:pk>/certificate.pem",
        views.download_certificate,
        name="certificate-download",
    ),
    path("upload/", views.upload, name="upload"),
    path("upload/confirm/", views.confirm_replace, name="upload-confirm"),
    path("uploads/<int:pk>/delete/", views.delete_upload, name="upload-delete"),
]
