"""Certificate inventory representations (read-only) and the revoke request."""

from rest_framework import serializers

from apps.certificates.choices import CertificateStatus
from apps.certificates.models import Certificate
from apps.pki.choices import RevocationReason


class CertificateSerializer(serializers.ModelSerializer):
    """A certificate in a list: identity, validity and lifecycle state."""

    subject_alt_names = serializers.SerializerMethodField(
        help_text='Subject alternative names as "TYPE:value", e.g. "DNS:host.example.com".'
    )

    class Meta:
        model = Certificate
        fields = [
            "id",
            "serial",
            "subject",
            "subject_alt_names",
            "not_before",
            "not_after",
            "fingerprint_sha256",
            "status",
            "revoked_at",
            "revocation_reason",
            "source",
            "ca",
            "template",
            "user",
            "created_at",
        ]
        read_only_fields = fields

    def get_subject_alt_names(self, certificate: Certificate) -> list[str]:
        return certificate.subject_alt_names.splitlines()


class CertificateDetailSerializer(CertificateSerializer):
    """A certificate with its PEM."""

    class Meta(CertificateSerializer.Meta):
        fields = [*CertificateSerializer.Meta.fields, "certificate_pem"]
        read_only_fields = fields


class RevokeSerializer(serializers.Serializer):
    """Body of a revocation."""

    reason = serializers.ChoiceField(
        choices=RevocationReason.choices,
        default=RevocationReason.UNSPECIFIED,
        help_text="RFC 5280 revocation reason.",
    )


class CertificateFilterSerializer(serializers.Serializer):
    """Query parameters of the certificate list; every one is optional."""

    status = serializers.ChoiceField(choices=CertificateStatus.choices, required=False)
    ca = serializers.IntegerField(min_value=1, required=False, help_text="CA server id.")
    template = serializers.IntegerField(
        min_value=1, required=False, help_text="Request template id."
    )
    expires_within_days = serializers.IntegerField(
        min_value=1,
        max_value=36500,
        required=False,
        help_text="Not yet expired and expiring within this many days (e.g. 7, 30, 90).",
    )
    q = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Search serial, subject, subject alternative names and SHA-256 "
        "fingerprint (hex, colons optional).",
    )
