"""The staff REST API (/api/v1/): one router over every app's API views."""

from rest_framework.routers import DefaultRouter

from apps.certificates.api.views import CertificateViewSet
from apps.enrollment.api.views import CertificateTemplateViewSet
from apps.pki.api.views import CertificateAuthorityViewSet

router = DefaultRouter()
router.register("ca-servers", CertificateAuthorityViewSet, basename="ca-server")
router.register("templates", CertificateTemplateViewSet, basename="template")
router.register("certificates", CertificateViewSet, basename="certificate")

urlpatterns = router.urls
