"""Staff REST API: devices (read, rename, reassign, scan, redeliver, unenroll), device
groups (CRUD with members) and enrollment codes (create, list, revoke)."""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.devices import services
from apps.devices.api.permissions import CanChangeByPost
from apps.devices.api.serializers import (
    CreatedEnrollmentCodeSerializer,
    DeviceGroupSerializer,
    DeviceSerializer,
    EnrollmentCodeSerializer,
)
from apps.devices.models import Device, DeviceGroup, EnrollmentCode


class Conflict(exceptions.APIException):
    """409: the object's state does not allow the action."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


REDELIVERED = inline_serializer(
    "Redelivered", fields={"redelivered": serializers.IntegerField(help_text="How many.")}
)


@extend_schema(tags=["Devices"])
class DeviceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Devices enroll themselves (device API); staff rename them, change their owner and
    act on them. Reading needs ``devices.view_device``, changing ``devices.change_device``."""

    serializer_class = DeviceSerializer

    def get_queryset(self) -> QuerySet[Device]:
        return Device.objects.select_related("owner").prefetch_related(
            "groups", "deliveries__profile", "installed_certificates"
        )

    @extend_schema(summary="Ask for an inventory scan at the next check-in", request=None)
    @action(detail=True, methods=["post"], permission_classes=[CanChangeByPost])
    def scan(self, request: Request, pk: str | None = None) -> Response:
        device = self.get_object()
        services.request_scan(device=device, request=request)
        return Response(DeviceSerializer(self.get_object()).data)

    @extend_schema(
        summary="Deliver every profile again at the next check-in",
        request=None,
        responses={200: REDELIVERED},
    )
    @action(detail=True, methods=["post"], permission_classes=[CanChangeByPost])
    def redeliver(self, request: Request, pk: str | None = None) -> Response:
        count = services.redeliver_profiles(device=self.get_object(), request=request)
        return Response({"redelivered": count})

    @extend_schema(
        summary="Unenroll the device",
        request=None,
        responses={
            200: DeviceSerializer,
            409: OpenApiResponse(description="The device is not enrolled."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[CanChangeByPost])
    def unenroll(self, request: Request, pk: str | None = None) -> Response:
        """Its token stops working and its profiles are to be removed."""
        device = self.get_object()
        if not services.unenroll(device=device, request=request):
            raise Conflict(f"Device {device} is {device.get_status_display().lower()}.")
        return Response(DeviceSerializer(self.get_object()).data)


@extend_schema(tags=["Devices"])
class DeviceGroupViewSet(viewsets.ModelViewSet):
    """Device groups (labels). Django model permissions of ``devices.devicegroup``."""

    queryset = DeviceGroup.objects.prefetch_related("devices")
    serializer_class = DeviceGroupSerializer

    def perform_destroy(self, instance: DeviceGroup) -> None:
        services.delete_group(group=instance, request=self.request)


@extend_schema(tags=["Devices"])
class EnrollmentCodeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Enrollment codes. The code is in the answer to its creation only."""

    queryset = EnrollmentCode.objects.select_related("owner", "group")
    serializer_class = EnrollmentCodeSerializer

    @extend_schema(responses={201: CreatedEnrollmentCodeSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        body = EnrollmentCodeSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        row = body.save()
        return Response(CreatedEnrollmentCodeSerializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke the enrollment code",
        request=None,
        responses={
            200: EnrollmentCodeSerializer,
            409: OpenApiResponse(description="The code is revoked already."),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[CanChangeByPost])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        code = self.get_object()
        if not services.revoke_enrollment_code(code=code, request=request):
            raise Conflict(f"Enrollment code {code} is revoked already.")
        return Response(EnrollmentCodeSerializer(self.get_object()).data)
