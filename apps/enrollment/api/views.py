"""Request templates: full CRUD, audited through ``enrollment.services``."""

import datetime

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.permissions import StaffWithPerms
from apps.enrollment.api.serializers import (
    CertificateTemplateSerializer,
    ChallengeSerializer,
    MintChallengeSerializer,
)
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.services import TemplateInUse, delete_template, mint_challenge


class CanMintChallenge(StaffWithPerms):
    """Staff with ``enrollment.add_challenge`` (and view on the template)."""

    required_perms = ("enrollment.add_challenge", "enrollment.view_certificatetemplate")


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

    @extend_schema(
        summary="Mint a one-time dynamic challenge",
        request=MintChallengeSerializer,
        responses={
            201: ChallengeSerializer,
            400: OpenApiResponse(description="The template is not dynamic."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[CanMintChallenge])
    def challenges(self, request: Request, pk: str | None = None) -> Response:
        """A challenge bound to this template and a device (or user), shown once."""
        template = self.get_object()
        if template.challenge_type != ChallengeType.DYNAMIC:
            raise exceptions.ValidationError(
                {"detail": f"Template {template.slug} does not use dynamic challenges."}
            )
        body = MintChallengeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        challenge, value = mint_challenge(
            template=template,
            device=data.get("device"),
            user=data.get("user"),
            ttl=datetime.timedelta(minutes=data["minutes"]),
        )
        result = {
            "challenge": value,
            "expires_at": challenge.expires_at,
            "template": template.pk,
            "device": challenge.device_id,
        }
        return Response(ChallengeSerializer(result).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: CertificateTemplate) -> None:
        try:
            delete_template(template=instance, request=self.request)
        except TemplateInUse as exc:
            raise TemplateInUseConflict(str(exc)) from exc
