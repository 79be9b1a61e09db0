"""User-provided identities through the staff API: list, upload on behalf of a user,
delete. The key, the password and the file are never returned."""

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.certificates.choices import CertificateSource, IdentityPurpose
from apps.certificates.models import Certificate, Identity
from apps.certificates.uploads import (
    MAX_UPLOAD_BYTES,
    ReplaceConfirmationNeeded,
    UploadRejected,
    check_upload_size,
    delete_user_identity,
    store_user_identity,
    user_identities,
)


class IdentityCertificateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Certificate
        fields = ["id", "serial", "subject", "not_before", "not_after", "fingerprint_sha256"]
        fields += ["status", "source"]
        read_only_fields = fields


class UserIdentitySerializer(serializers.ModelSerializer):
    """A user's uploaded identity: its purpose and public certificate, never its key."""

    certificate = IdentityCertificateSerializer(read_only=True)

    class Meta:
        model = Identity
        fields = ["id", "user", "purpose", "certificate", "created_at", "delivered_at"]
        read_only_fields = fields


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text=f"PKCS#12 (.p12/.pfx), at most {MAX_UPLOAD_BYTES} bytes."
    )
    password = serializers.CharField(
        allow_blank=True, trim_whitespace=False, write_only=True, style={"input_type": "password"}
    )
    purpose = serializers.ChoiceField(choices=IdentityPurpose.choices)
    replace = serializers.BooleanField(
        default=False, help_text="Replace the user's current identity for this purpose."
    )


class UploadRefused(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "upload_refused"


@extend_schema(tags=["User-provided identities"])
class IdentityViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Every user's current uploaded identities (``certificates.view_identity``); deleting
    one (``certificates.delete_identity``) deletes its key and marks its certificate
    removed, as its owner's delete does."""

    serializer_class = UserIdentitySerializer
    queryset = Identity.objects.none()  # names the model for the permission class

    def get_queryset(self) -> QuerySet[Identity]:
        return (
            Identity.objects.filter(
                current=True, certificate__source=CertificateSource.USER_PROVIDED
            )
            .exclude(purpose="")
            .select_related("certificate")
            .order_by("user_id", "purpose", "pk")
        )

    def perform_destroy(self, instance: Identity) -> None:
        delete_user_identity(identity=instance, actor=self.request.user, request=self.request)


@extend_schema(tags=["User-provided identities"])
class UserIdentitiesViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """One user's current uploaded identities, and uploads on their behalf
    (``certificates.add_identity``), as the user portal takes them."""

    serializer_class = UserIdentitySerializer
    queryset = Identity.objects.none()  # names the model for the permission class
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Identity]:
        return user_identities(self._user())

    def _user(self):
        return get_object_or_404(get_user_model(), pk=self.kwargs["user_pk"])

    @extend_schema(
        summary="Upload a PKCS#12 identity for the user",
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: UserIdentitySerializer,
            400: OpenApiResponse(description="The file was refused; the message says why."),
            409: OpenApiResponse(description="The user has one for this purpose: replace=true."),
        },
    )
    def create(self, request: Request, user_pk: str | None = None) -> Response:
        """Validate the file as the portal does and store it; nothing is stored when it is
        refused (400) or when a replacement was not confirmed (409)."""
        user = self._user()
        body = UploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        try:
            check_upload_size(upload.size)
            identity = store_user_identity(
                user=user,
                purpose=body.validated_data["purpose"],
                data=upload.read(MAX_UPLOAD_BYTES + 1),
                password=body.validated_data["password"],
                replace=body.validated_data["replace"],
                actor=request.user,
                request=request,
            )
        except ReplaceConfirmationNeeded as exc:
            body = {"detail": exc.message, "existing": exc.existing.pk}
            return Response(body, status=status.HTTP_409_CONFLICT)
        except UploadRejected as exc:
            raise UploadRefused(exc.message) from exc
        return Response(UserIdentitySerializer(identity).data, status=status.HTTP_201_CREATED)
