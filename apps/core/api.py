"""Shared pieces of the REST API."""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, serializers
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def secret_field(help_text: str) -> serializers.CharField:
    """A stored secret as input only: write-only, kept when omitted, cleared by ""."""
    return serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=255,
        style={"input_type": "password"},
        help_text=f'{help_text} Write-only: omitted keeps the stored one, "" clears it.',
    )


def exception_handler(exc, context):
    """DRF's handler, plus Django ``ValidationError`` from services as a 400."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)
    return drf_exception_handler(exc, context)
