"""Devices authenticate with ``Authorization: Device <token>``; only its SHA-256 is stored."""

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission

from apps.devices.models import DeviceToken
from apps.devices.services import token_for_key

KEYWORD = "Device"


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """The request's ``auth`` is the device's token; its ``user`` stays anonymous, so a
    device never acts with its owner's rights."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                f"Send the device token as 'Authorization: {KEYWORD} <token>'."
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("The device token is not valid.") from exc
        token = token_for_key(key)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "Invalid or revoked device token; enroll the device again."
            )
        return AnonymousUser(), token

    def authenticate_header(self, request) -> str:
        return KEYWORD  # so that a missing or bad token is a 401, not a 403


class IsDevice(BasePermission):
    """The request carries a valid device token."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, DeviceToken)
