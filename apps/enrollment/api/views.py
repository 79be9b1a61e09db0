"""Request templates: full CRUD, audited through ``enrollment.services``."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets

from apps.enrollment.api.serializers import CertificateTemplateSerializer
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.services import TemplateInUse, delete_template


class TemplateInUseConflict(exceptions.APIException):
    """409: the template still has certificates."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The template is in use and cannot be deleted."
    default_code = "template_in_use"


@extend_schema(tags=["Request templates"])
@extend_schema_view(
    destroy=extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(description="Certificates still use the template."),
        }
    ),
)
class CertificateTemplateViewSet(viewsets.ModelViewSet):
    """Request templates. Django model permissions of ``enrollment.certificatetemplate``."""

    queryset = CertificateTemplate.objects.prefetch_related("san_rows")
    serializer_class = CertificateTemplateSerializer

    def perform_destroy(self, instance: CertificateTemplate) -> None:
        try:
            delete_template(template=instance, request=self.request)
        except TemplateInUse as exc:
            raise TemplateInUseConflict(str(exc)) from exc
