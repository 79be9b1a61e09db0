"""Staff API representations of devices, groups and enrollment codes."""

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from apps.audit.services import snapshot
from apps.devices import services
from apps.devices.models import Device, DeviceGroup, EnrollmentCode, InstalledCertificate
from apps.profiles.models import Delivery


class DeliverySerializer(serializers.ModelSerializer):
    """Where one profile stands on the device."""

    profile_name = serializers.CharField(source="profile.name", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "profile",
            "profile_name",
            "status",
            "delivered_version",
            "generation",
            "delivered_generation",
            "error",
            "delivered_at",
            "acknowledged_at",
        ]
        read_only_fields = fields


class InstalledCertificateSerializer(serializers.ModelSerializer):
    """A certificate the device reported installed; ``certificate`` is mdmcerts' row
    when mdmcerts issued it."""

    issued_by_mdmcerts = serializers.SerializerMethodField()

    class Meta:
        model = InstalledCertificate
        fields = [
            "fingerprint_sha256",
            "subject",
            "issuer",
            "not_after",
            "certificate",
            "issued_by_mdmcerts",
            "first_seen_at",
            "last_seen_at",
        ]
        read_only_fields = fields

    def get_issued_by_mdmcerts(self, row: InstalledCertificate) -> bool:
        return row.certificate_id is not None


class DeviceSerializer(serializers.ModelSerializer):
    """A device: its facts (reported by the device), owner, groups, deliveries and
    inventory. Administrators change ``name`` and ``owner`` only."""

    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(), allow_null=True, required=False
    )
    groups = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    deliveries = DeliverySerializer(many=True, read_only=True)
    installed_certificates = InstalledCertificateSerializer(many=True, read_only=True)

    class Meta:
        model = Device
        fields = [
            "id",
            "name",
            "owner",
            "platform",
            "status",
            "serial_number",
            "udid",
            "uuid",
            "imei",
            "imsi",
            "wifi_mac",
            "client_id",
            "enrolled_at",
            "last_checkin_at",
            "last_inventory_at",
            "scan_requested",
            "groups",
            "deliveries",
            "installed_certificates",
        ]
        read_only_fields = [name for name in fields if name not in {"name", "owner"}]

    def update(self, device: Device, validated_data: dict[str, Any]) -> Device:
        before = snapshot(device)
        for name, value in validated_data.items():
            setattr(device, name, value)
        return services.save_device(device=device, before=before, request=self.context["request"])


class DeviceGroupSerializer(serializers.ModelSerializer):
    """A device group (label); ``devices`` given on a write replaces the members."""

    devices = serializers.PrimaryKeyRelatedField(
        many=True, queryset=Device.objects.all(), required=False
    )

    class Meta:
        model = DeviceGroup
        fields = ["id", "name", "description", "devices"]

    def create(self, validated_data: dict[str, Any]) -> DeviceGroup:
        return self._save(DeviceGroup(), validated_data, before=None)

    def update(self, group: DeviceGroup, validated_data: dict[str, Any]) -> DeviceGroup:
        return self._save(group, validated_data, before=snapshot(group))

    def _save(self, group: DeviceGroup, validated_data: dict[str, Any], *, before) -> DeviceGroup:
        devices = validated_data.pop("devices", None)
        for name, value in validated_data.items():
            setattr(group, name, value)
        return services.save_group(
            group=group, before=before, devices=devices, request=self.context["request"]
        )


class EnrollmentCodeSerializer(serializers.ModelSerializer):
    """An enrollment code; the code itself is returned once, when it is created."""

    owner = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(),
        allow_null=True,
        required=False,
        help_text="User id: devices enrolled with the code belong to this user.",
    )
    max_uses = serializers.IntegerField(
        min_value=1,
        allow_null=True,
        default=1,
        help_text="1 for a one-time code; null for no limit.",
    )
    state = serializers.CharField(read_only=True, help_text="usable, revoked, expired or used up.")

    class Meta:
        model = EnrollmentCode
        fields = [
            "id",
            "name",
            "prefix",
            "owner",
            "group",
            "max_uses",
            "uses",
            "expires_at",
            "revoked_at",
            "created_at",
            "state",
        ]
        read_only_fields = ["prefix", "uses", "revoked_at", "created_at"]

    def create(self, validated_data: dict[str, Any]) -> EnrollmentCode:
        row, code = services.create_enrollment_code(
            **validated_data, request=self.context["request"]
        )
        row.code = code  # for CreatedEnrollmentCodeSerializer, this once
        return row


class CreatedEnrollmentCodeSerializer(EnrollmentCodeSerializer):
    """A new enrollment code with the code itself, which is never shown again."""

    code = serializers.CharField(read_only=True, help_text="Shown once; only its hash is kept.")

    class Meta(EnrollmentCodeSerializer.Meta):
        fields = [*EnrollmentCodeSerializer.Meta.fields, "code"]
