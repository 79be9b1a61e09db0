"""The certificate inventory: list with filters, detail, revoke. Read-only otherwise."""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.certificates.api.filters import filter_certificates
from apps.certificates.api.permissions import CanRevokeCertificate
from apps.certificates.api.serializers import (
    CertificateDetailSerializer,
    CertificateFilterSerializer,
    CertificateSerializer,
    RevokeSerializer,
)
from apps.certificates.models import Certificate
from apps.certificates.services import AlreadyRevoked, revoke_certificate


class RevocationConflict(exceptions.APIException):
    """409: the certificate's state does not allow revoking it (already revoked)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The certificate cannot be revoked in its current state."
    default_code = "revocation_conflict"


@extend_schema(tags=["Certificates"])
@extend_schema_view(list=extend_schema(parameters=[CertificateFilterSerializer]))
class CertificateViewSet(viewsets.ReadOnlyModelViewSet):
    """The certificate inventory. Reading needs ``certificates.view_certificate``; revoking
    also needs ``certificates.change_certificate``."""

    queryset = Certificate.objects.all()

    def get_queryset(self) -> QuerySet[Certificate]:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        params = CertificateFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        return filter_certificates(queryset, params.validated_data)

    def get_serializer_class(self):
        return CertificateSerializer if self.action == "list" else CertificateDetailSerializer

    @extend_schema(
        summary="Revoke the certificate",
        request=RevokeSerializer,
        responses={
            200: CertificateDetailSerializer,
            409: OpenApiResponse(description="The certificate is already revoked."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[CanRevokeCertificate])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke now with an RFC 5280 reason; revoking twice is refused (409)."""
        certificate = self.get_object()
        body = RevokeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            certificate = revoke_certificate(
                certificate=certificate, reason=body.validated_data["reason"], request=request
            )
        except AlreadyRevoked as exc:
            raise RevocationConflict(str(exc)) from exc
        return Response(CertificateDetailSerializer(certificate).data)
