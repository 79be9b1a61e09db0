"""Profile representations with their payloads nested, and assignments."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from apps.audit.services import snapshot
from apps.profiles.api.fields import NamedChoiceField, PayloadReferenceField
from apps.profiles.choices import PayloadKind, ProfilePlatform
from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload
from apps.profiles.services import assign, save_profile


class ProfilePayloadSerializer(serializers.ModelSerializer):
    """One payload. Which fields matter depends on ``kind``: SCEP needs ``template`` (keys
    generated on the device); PKCS#12 identity ``template`` (keys generated on the server);
    trusted certificate ``ca``; Wi-Fi ``ssid``, ``wifi_security`` and ``identity``; VPN
    ``vpn_type``, ``server`` and ``identity``; email ``host``, ``email_address`` and
    ``identity``. Text fields may hold lookup variables such as $EMAIL$."""

    kind = NamedChoiceField(enum_name="PayloadKindEnum", choices=PayloadKind.choices)
    uuid = serializers.UUIDField(
        required=False,
        help_text="The Apple PayloadUUID. Send an existing payload's uuid back to update it "
        "(devices then replace it in place); omit it for a new payload, or choose one to "
        "name the new payload as an identity in the same request.",
    )
    identity = PayloadReferenceField(
        required=False,
        allow_null=True,
        help_text="Wi-Fi, VPN, email: uuid of a SCEP or PKCS#12 identity payload in the same list.",
    )

    class Meta:
        model = ProfilePayload
        fields = [
            "uuid",
            "kind",
            "display_name",
            "template",
            "ca",
            "identity",
            "ssid",
            "hidden_network",
            "auto_join",
            "wifi_security",
            "trusted_server_names",
            "vpn_type",
            "server",
            "remote_identifier",
            "account",
            "host",
            "use_ssl",
            "email_address",
            "user_name",
        ]


class ProfileSerializer(serializers.ModelSerializer):
    """A profile with its payloads in order. Payloads given on a write replace the current
    ones (see ``uuid``); every change increments ``version``, so devices get the profile
    again."""

    platform = NamedChoiceField(
        enum_name="ProfilePlatformEnum",
        choices=ProfilePlatform.choices,
        required=False,
        help_text="Apple profiles are delivered as .mobileconfig (default); the others as "
        "neutral JSON.",
    )
    payloads = ProfilePayloadSerializer(
        many=True,
        required=False,
        help_text="In order. Replaces every payload when given; payloads not listed are deleted.",
    )

    class Meta:
        model = Profile
        fields = [
            "id",
            "name",
            "identifier",
            "description",
            "platform",
            "signing_ca",
            "uuid",
            "version",
            "payloads",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["uuid", "version", "created_at", "updated_at"]

    def create(self, validated_data: dict[str, Any]) -> Profile:
        return self._save(Profile(), validated_data, before=None)

    def update(self, profile: Profile, validated_data: dict[str, Any]) -> Profile:
        return self._save(profile, validated_data, before=snapshot(profile))

    def _save(
        self, profile: Profile, validated_data: dict[str, Any], *, before: dict | None
    ) -> Profile:
        payloads = validated_data.pop("payloads", None)
        for name, value in validated_data.items():
            setattr(profile, name, value)
        return save_profile(
            profile=profile, before=before, payloads=payloads, request=self.context["request"]
        )


class ProfileAssignmentSerializer(serializers.ModelSerializer):
    """A profile assigned to a device group or to one device: exactly one of them."""

    class Meta:
        model = ProfileAssignment
        fields = ["id", "profile", "group", "device", "created_at"]
        read_only_fields = ["created_at"]
        validators = []  # the service says "already assigned", in the domain's words

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("group") is None) == (attrs.get("device") is None):
            raise serializers.ValidationError("Give a group or a device (one of them).")
        return attrs

    def create(self, validated_data: dict[str, Any]) -> ProfileAssignment:
        try:
            return assign(**validated_data, request=self.context["request"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"non_field_errors": exc.messages}) from exc


class AssignmentFilterSerializer(serializers.Serializer):
    """Query parameters of the assignment list."""

    profile = serializers.IntegerField(required=False, help_text="Only this profile's.")
    group = serializers.IntegerField(required=False, help_text="Only this group's.")
    device = serializers.IntegerField(required=False, help_text="Only this device's.")
