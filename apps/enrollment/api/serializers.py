"""Request template representations, with SAN rows nested and the static challenge
write-only."""

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from apps.audit.services import snapshot
from apps.core.api import secret_field
from apps.devices.models import Device
from apps.enrollment.choices import SanType
from apps.enrollment.models import (
    CertificateTemplate,
    TemplateSubjectAltName,
    validate_oid_list,
)
from apps.enrollment.services import save_template


class SubjectAltNameSerializer(serializers.ModelSerializer):
    """One SAN row; ``value`` may hold lookup variables."""

    class Meta:
        model = TemplateSubjectAltName
        fields = ["san_type", "value"]


class CertificateTemplateSerializer(serializers.ModelSerializer):
    """A request template. SAN rows given on a write replace the current ones wholesale;
    ``static_challenge`` is never returned (see ``has_static_challenge``)."""

    subject_alternative_names = SubjectAltNameSerializer(
        many=True,
        source="san_rows",
        required=False,
        help_text="Replaces every SAN row when given; the order is kept.",
    )
    extended_key_usages = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        validators=[validate_oid_list],
        help_text="OIDs, e.g. 1.3.6.1.5.5.7.3.2 for client authentication.",
    )
    allowed_request_san_types = serializers.ListField(
        child=serializers.ChoiceField(choices=SanType.choices),
        required=False,
        help_text="SAN types copied from the request when the subject comes from it.",
    )
    static_challenge = secret_field("The static enrollment challenge password.")
    has_static_challenge = serializers.SerializerMethodField()

    class Meta:
        model = CertificateTemplate
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "ca",
            "subject",
            "subject_alternative_names",
            "key_algorithm",
            "key_usage_digital_signature",
            "key_usage_key_encipherment",
            "extended_key_usages",
            "validity_days",
            "auto_renew",
            "renew_before_days",
            "revocation_enabled",
            "revocation_grace_hours",
            "challenge_type",
            "static_challenge",
            "has_static_challenge",
            "max_failed_attempts",
            "retry_interval_seconds",
            "key_generation",
            "external_delivery",
            "subject_source",
            "allowed_request_san_types",
            "approval_required",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_has_static_challenge(self, template: CertificateTemplate) -> bool:
        return bool(template.static_challenge)

    def create(self, validated_data: dict[str, Any]) -> CertificateTemplate:
        return self._save(CertificateTemplate(), validated_data, before=None)

    def update(
        self, template: CertificateTemplate, validated_data: dict[str, Any]
    ) -> CertificateTemplate:
        return self._save(template, validated_data, before=snapshot(template))

    def _save(
        self,
        template: CertificateTemplate,
        validated_data: dict[str, Any],
        *,
        before: dict[str, Any] | None,
    ) -> CertificateTemplate:
        san_rows = validated_data.pop("san_rows", None)
        static_challenge = validated_data.pop("static_challenge", None)
        for name, value in validated_data.items():
            setattr(template, name, value)
        return save_template(
            template=template,
            before=before,
            san_rows=None
            if san_rows is None
            else [(row["san_type"], row["value"]) for row in san_rows],
            static_challenge=static_challenge,
            request=self.context["request"],
        )


class MintChallengeSerializer(serializers.Serializer):
    """Body of a challenge request: whom the challenge is for, and for how long."""

    device = serializers.PrimaryKeyRelatedField(
        queryset=Device.objects.all(),
        required=False,
        allow_null=True,
        help_text="Device id; its owner fills the user variables.",
    )
    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
        help_text="Username, when no device is given.",
    )
    minutes = serializers.IntegerField(min_value=1, max_value=7 * 24 * 60, default=60)


class ChallengeSerializer(serializers.Serializer):
    challenge = serializers.CharField(help_text="Shown once; only its salted hash is stored.")
    expires_at = serializers.DateTimeField()
    template = serializers.IntegerField()
    device = serializers.IntegerField(allow_null=True)
