"""CA servers: list, detail, CA certificate download; external SCEP CA servers are also
created, changed and tested ("Test connection") here. Local CAs stay read-only."""

from cryptography.hazmat.primitives import serialization
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.permissions import StaffWithPerms
from apps.pki import external
from apps.pki.api.serializers import (
    CertificateAuthoritySerializer,
    CertificateDownloadSerializer,
    CertificateEncoding,
    ConnectionReportSerializer,
)
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority

DOWNLOADS = {
    CertificateEncoding.PEM: (serialization.Encoding.PEM, "application/x-pem-file", "pem"),
    CertificateEncoding.DER: (serialization.Encoding.DER, "application/pkix-cert", "cer"),
}
DOWNLOAD_DESCRIPTION = "The CA certificate: PEM by default, DER with ?encoding=der."
LOCAL_READ_ONLY = (
    "Only external SCEP CA servers can be changed through the API; local CAs are "
    "generated, imported and changed in the console."
)


class CanTestConnection(StaffWithPerms):
    """Staff who may view CA servers: a test changes nothing (as in the console)."""

    required_perms = ("pki.view_certificateauthority",)


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
@extend_schema_view(
    create=extend_schema(
        summary="Add an external SCEP CA server",
        description="Its CA certificate is fetched with GetCACert (or taken from "
        "``ca_certificate_pem``) and pinned; a wrong ``expected_fingerprint``, an unreachable "
        "SCEP URL or a missing challenge is a 400 and nothing is saved.",
    ),
    update=extend_schema(summary="Change an external SCEP CA server"),
    partial_update=extend_schema(summary="Change some settings of an external SCEP CA server"),
)
class CertificateAuthorityViewSet(
    mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet
):
    """CA servers. Reading needs ``pki.view_certificateauthority``; adding and changing an
    external SCEP CA server ``add_``/``change_certificateauthority``. No deletion here."""

    queryset = CertificateAuthority.objects.all()
    serializer_class = CertificateAuthoritySerializer

    def update(self, request: Request, *args, **kwargs) -> Response:
        # Refused before validation: it may fetch GetCACert from the network.
        if self.get_object().kind != CAKind.SCEP:
            raise exceptions.ValidationError({"detail": LOCAL_READ_ONLY})
        return super().update(request, *args, **kwargs)

    @extend_schema(
        summary="Test connection: GetCACaps and GetCACert now",
        request=None,
        responses={
            200: ConnectionReportSerializer,
            400: OpenApiResponse(description="The CA server is not an external SCEP CA."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="test-connection",
        permission_classes=[CanTestConnection],
    )
    def test_connection(self, request: Request, pk: str | None = None) -> Response:
        """What the external CA answers now: its capabilities, its certificates and
        whether the pinned one is among them. A CA that cannot be reached is a report
        with ``ok`` false and the ``error``, not an error of this request."""
        ca = self.get_object()
        if ca.kind != CAKind.SCEP:
            raise exceptions.ValidationError(
                {"detail": f"CA server {ca.name} is a local CA: there is no server to test."}
            )
        report = external.check_connection(ca=ca)
        return Response(ConnectionReportSerializer(report).data)

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
