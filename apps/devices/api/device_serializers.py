"""Bodies of the device API (docs/device-api.md)."""

from typing import Any

from rest_framework import serializers

from apps.devices.choices import Platform
from apps.profiles.choices import DeliveryStatus

MAX_INVENTORY = 1000


def _fact(max_length: int) -> serializers.CharField:
    return serializers.CharField(
        max_length=max_length, required=False, allow_blank=True, allow_null=True
    )


class DeviceFactsSerializer(serializers.Serializer):
    """What a device says about itself; ``name`` and ``platform`` are required."""

    name = serializers.CharField(max_length=200)
    platform = serializers.ChoiceField(choices=Platform.choices)
    serial_number = _fact(100)
    udid = _fact(100)
    uuid = _fact(64)
    imei = _fact(32)
    imsi = _fact(32)
    wifi_mac = _fact(32)
    client_id = _fact(100)


class EnrollSerializer(DeviceFactsSerializer):
    """``POST enroll``: an enrollment code and the device's facts."""

    code = serializers.CharField(max_length=200, trim_whitespace=True)


class CheckinFactsSerializer(DeviceFactsSerializer):
    """The facts of a check-in: every one optional."""

    name = serializers.CharField(max_length=200, required=False)
    platform = serializers.ChoiceField(choices=Platform.choices, required=False)


class InstalledCertificateSerializer(serializers.Serializer):
    """One installed certificate: its PEM, or its SHA-256 fingerprint (hex)."""

    pem = serializers.CharField(
        required=False, allow_blank=True, max_length=65536, trim_whitespace=False
    )
    fingerprint_sha256 = serializers.CharField(required=False, allow_blank=True, max_length=128)


class CheckinSerializer(serializers.Serializer):
    """``POST checkin``: facts and, when the device scanned, its installed certificates
    (absent or null: no inventory this time; an empty list: none installed)."""

    facts = CheckinFactsSerializer(required=False)
    installed_certificates = InstalledCertificateSerializer(
        many=True, required=False, allow_null=True, max_length=MAX_INVENTORY
    )


class AckSerializer(serializers.Serializer):
    """``POST ack``: what the device did with one profile."""

    profile_id = serializers.IntegerField(min_value=1)
    status = serializers.ChoiceField(
        choices=[DeliveryStatus.INSTALLED, DeliveryStatus.FAILED, DeliveryStatus.REMOVED]
    )
    version = serializers.IntegerField(min_value=1, required=False)
    generation = serializers.IntegerField(min_value=1, required=False)
    error = serializers.CharField(
        required=False, allow_blank=True, help_text="Kept up to its first 4000 characters."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        installing = attrs["status"] != DeliveryStatus.REMOVED
        if installing and ("version" not in attrs or "generation" not in attrs):
            raise serializers.ValidationError(
                "version and generation (as delivered) are required with installed and failed"
            )
        return attrs
