"""CA servers: list, detail and CA certificate download. Read-only."""

from cryptography.hazmat.primitives import serialization
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from apps.pki.api.serializers import (
    CertificateAuthoritySerializer,
    CertificateDownloadSerializer,
    CertificateEncoding,
)
from apps.pki.models import CertificateAuthority

DOWNLOADS = {
    CertificateEncoding.PEM: (serialization.Encoding.PEM, "application/x-pem-file", "pem"),
    CertificateEncoding.DER: (serialization.Encoding.DER, "application/pkix-cert", "cer"),
}
DOWNLOAD_DESCRIPTION = "The CA certificate: PEM by default, DER with ?encoding=der."


class FirstRendererNegotiation(BaseContentNegotiation):
    """The download's media type comes from ``?encoding=``, not from ``Accept``.

    Without this, ``Accept: application/pkix-cert`` would be refused with a 406, because
    no DRF renderer produces it; errors are still rendered by the first renderer (JSON).
    """

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["CA servers"])
class CertificateAuthorityViewSet(viewsets.ReadOnlyModelViewSet):
    """CA servers. Reading needs ``pki.view_certificateauthority``."""

    queryset = CertificateAuthority.objects.all()
    serializer_class = CertificateAuthoritySerializer

    @extend_schema(
        summary="Download the CA certificate",
        parameters=[CertificateDownloadSerializer],
        responses={
            (200, "application/x-pem-file"): OpenApiResponse(
                OpenApiTypes.STR, description=DOWNLOAD_DESCRIPTION
            ),
            (200, "application/pkix-cert"): OpenApiResponse(
                OpenApiTypes.BINARY, description=DOWNLOAD_DESCRIPTION
            ),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="certificate",
        renderer_classes=[JSONRenderer],
        content_negotiation_class=FirstRendererNegotiation,
    )
    def certificate(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The CA certificate (public), as ``?encoding=pem`` (default) or ``der``."""
        ca = self.get_object()
        params = CertificateDownloadSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        encoding, media_type, extension = DOWNLOADS[params.validated_data["encoding"]]
        response = HttpResponse(ca.certificate.public_bytes(encoding), content_type=media_type)
        response["Content-Disposition"] = f'attachment; filename="{ca.slug}.{extension}"'
        return response
