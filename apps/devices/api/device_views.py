"""The device API (/api/device/v1/): enroll, check in, acknowledge, unenroll.

Devices are not staff: no session, no CSRF, no staff permissions; they authenticate with
their device token (``enroll`` with an enrollment code). Errors are 4xx with
``{"detail": "..."}`` and change nothing. Not part of the staff OpenAPI schema: the
contract is docs/device-api.md.
"""

import dataclasses
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from apps.core.api import exception_handler
from apps.core.net import client_ip
from apps.devices import services
from apps.devices.api.authentication import DeviceTokenAuthentication, IsDevice
from apps.devices.api.device_serializers import (
    AckSerializer,
    CheckinSerializer,
    EnrollSerializer,
)
from apps.devices.models import Device
from apps.profiles import delivery

DEFAULT_ENROLL_RATE = "30/minute"


class Refused(exceptions.APIException):
    """400: the request is well-formed but refused; the detail says why."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "refused"


class EnrollRateThrottle(SimpleRateThrottle):
    """Enrollment attempts per client address. The rate is the ``device_enroll`` entry of
    DRF's ``DEFAULT_THROTTLE_RATES``, else ``MDMCERTS_DEVICE_ENROLL_RATE``, else 30/minute."""

    scope = "device_enroll"

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) or getattr(
            settings, "MDMCERTS_DEVICE_ENROLL_RATE", DEFAULT_ENROLL_RATE
        )

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request) or "unknown"}


def device_exception_handler(exc, context) -> Response | None:
    """The staff API's handler, with every error as one ``{"detail": "..."}`` message."""
    response = exception_handler(exc, context)
    if response is not None:
        response.data = {"detail": _message(response.data)}
    return response


def _message(data: Any, where: str = "") -> str:
    if isinstance(data, dict):
        return "; ".join(_message(value, _path(where, key)) for key, value in data.items())
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return "; ".join(
                _message(item, f"{where}[{index}]") for index, item in enumerate(data) if item
            )
        return _message(" ".join(str(item) for item in data), where)
    return f"{where}: {data}" if where else str(data)


def _path(where: str, key: Any) -> str:
    if key in ("detail", api_settings.NON_FIELD_ERRORS_KEY):
        return where
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


class DeviceApiView(APIView):
    """Base of the device endpoints: JSON in and out, device token, ``detail`` errors."""

    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    schema = None  # device-facing: documented in docs/device-api.md, not the staff schema

    def get_exception_handler(self):
        return device_exception_handler

    @property
    def device(self) -> Device:
        return self.request.auth.device

    def body(self, serializer_class) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class EnrollView(DeviceApiView):
    """``POST enroll``: an enrollment code and facts in, the device id and token out."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [EnrollRateThrottle]

    def post(self, request: Request) -> Response:
        facts = self.body(EnrollSerializer)
        code = facts.pop("code")
        try:
            device, token = services.enroll(code=code, facts=facts, request=request)
        except services.EnrollmentRefused as exc:
            raise Refused(str(exc)) from exc
        return Response({"device_id": device.pk, "token": token}, status=status.HTTP_201_CREATED)


class CheckinView(DeviceApiView):
    """``POST checkin``: facts and inventory in; profiles to install and remove out."""

    def post(self, request: Request) -> Response:
        body = self.body(CheckinSerializer)
        try:
            result = services.checkin(
                device=self.device,
                facts=body.get("facts"),
                installed_certificates=body.get("installed_certificates"),
            )
        except services.InvalidInventory as exc:
            raise Refused(str(exc)) from exc
        return Response(dataclasses.asdict(result))


class AckView(DeviceApiView):
    """``POST ack``: installed, failed or removed, for one profile."""

    def post(self, request: Request) -> Response:
        body = self.body(AckSerializer)
        try:
            row = delivery.acknowledge(device=self.device, **body)
        except delivery.AckRefused as exc:
            raise Refused(str(exc)) from exc
        return Response({"status": row.status})


class UnenrollView(DeviceApiView):
    """``POST unenroll``: the token stops working and the device is unenrolled."""

    def post(self, request: Request) -> Response:
        services.unenroll(device=self.device, request=request)
        return Response({"status": "unenrolled"})
