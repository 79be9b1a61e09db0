"""CA server representations. The private key is never a field, not even write-only."""

from rest_framework import serializers

from apps.pki.models import CertificateAuthority


class CertificateAuthoritySerializer(serializers.ModelSerializer):
    """A CA server as the staff API shows it: identity and validity, no key material."""

    has_private_key = serializers.BooleanField(read_only=True)

    class Meta:
        model = CertificateAuthority
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "kind",
            "parent",
            "subject",
            "serial",
            "fingerprint_sha256",
            "not_before",
            "not_after",
            "key_algorithm",
            "signature_hash",
            "path_length",
            "has_private_key",
        ]
        read_only_fields = fields


class CertificateEncoding:
    PEM = "pem"
    DER = "der"
    CHOICES = [(PEM, "PEM (application/x-pem-file)"), (DER, "DER (application/pkix-cert)")]


class CertificateDownloadSerializer(serializers.Serializer):
    """Query parameters of the CA certificate download."""

    encoding = serializers.ChoiceField(
        choices=CertificateEncoding.CHOICES,
        default=CertificateEncoding.PEM,
        help_text="pem (default) or der.",
    )
