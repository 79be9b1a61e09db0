"""The staff REST API (/api/v1/): one router over every app's API views."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.certificates.api.identities import IdentityViewSet, UserIdentitiesViewSet
from apps.certificates.api.views import CertificateViewSet
from apps.devices.api.views import DeviceGroupViewSet, DeviceViewSet, EnrollmentCodeViewSet
from apps.enrollment.api.views import CertificateTemplateViewSet
from apps.pki.api.views import CertificateAuthorityViewSet
from apps.profiles.api.views import ProfileAssignmentViewSet, ProfileViewSet

router = DefaultRouter()
router.register("ca-servers", CertificateAuthorityViewSet, basename="ca-server")
router.register("templates", CertificateTemplateViewSet, basename="template")
router.register("certificates", CertificateViewSet, basename="certificate")
router.register("devices", DeviceViewSet, basename="device")
router.register("device-groups", DeviceGroupViewSet, basename="device-group")
router.register("enrollment-codes", EnrollmentCodeViewSet, basename="enrollment-code")
router.register("profiles", ProfileViewSet, basename="profile")
router.register("profile-assignments", ProfileAssignmentViewSet, basename="profile-assignment")
router.register("identities", IdentityViewSet, basename="identity")

user_identities = UserIdentitiesViewSet.as_view({"get": "list", "post": "create"})

urlpatterns = [
    path("users/<int:user_pk>/identities/", user_identities, name="user-identities"),
    *router.urls,
]
