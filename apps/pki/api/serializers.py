"""CA server representations. The private key is never a field, not even write-only; the
secrets of an external SCEP CA (static challenge, NDES password) are write-only."""

from typing import Any

from cryptography import x509
from django.core.validators import URLValidator
from django.db import transaction
from rest_framework import serializers

from apps.audit.services import snapshot
from apps.core.api import secret_field
from apps.pki import external
from apps.pki.backends.scep import UpstreamError
from apps.pki.choices import CAKind, ExternalChallengeType
from apps.pki.models import CertificateAuthority

HTTP_URL = URLValidator(schemes=["http", "https"], message="Enter an http or https URL.")
NDES_NEEDS = "Needed to fetch dynamic challenges from NDES."
SECRET_FIELDS = (("static_challenge", "scep_static_challenge"), ("ndes_password", "ndes_password"))
# Write-only inputs that are no model field's value (the secrets arrive in clear).
NOT_MODEL_VALUES = {
    "static_challenge",
    "ndes_password",
    "ca_certificate_pem",
    "refetch_ca_certificate",
    "expected_fingerprint",
}

# What the pinned or issued CA certificate says: read from it, never written.
CERTIFICATE_FIELDS = [
    "subject",
    "serial",
    "fingerprint_sha256",
    "not_before",
    "not_after",
    "key_algorithm",
    "signature_hash",
    "path_length",
]


class CertificateAuthoritySerializer(serializers.ModelSerializer):
    """A CA server: identity and validity, no key material. ``POST`` creates, ``PUT`` and
    ``PATCH`` change an external SCEP CA (kind ``scep``): its CA certificate is fetched
    with GetCACert (on create, or with ``refetch_ca_certificate``) or taken from
    ``ca_certificate_pem``, and pinned; ``expected_fingerprint`` must then match it."""

    has_private_key = serializers.BooleanField(read_only=True)
    static_challenge = secret_field("The static challenge the CA expects (challenge type static).")
    has_static_challenge = serializers.SerializerMethodField()
    ndes_password = secret_field("The password of the NDES account (challenge type dynamic).")
    has_ndes_password = serializers.SerializerMethodField()
    ca_certificate_pem = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="PEM of the CA certificate (and those above it) to pin instead of what "
        "GetCACert returns.",
    )
    refetch_ca_certificate = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="On a change: pin what GetCACert returns now (after the CA renewed).",
    )
    expected_fingerprint = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        help_text="SHA-256 fingerprint (colons allowed) the pinned CA certificate must have; "
        "nothing is saved otherwise.",
    )

    class Meta:
        model = CertificateAuthority
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "kind",
            "parent",
            *CERTIFICATE_FIELDS,
            "has_private_key",
            "scep_url",
            "scep_challenge_type",
            "static_challenge",
            "has_static_challenge",
            "ndes_challenge_url",
            "ndes_username",
            "ndes_password",
            "has_ndes_password",
            "ndes_challenge_length",
            "scep_retry_seconds",
            "scep_max_pending_retries",
            "scep_request_timeout_seconds",
            "scep_allow_single_des",
            "tls_trust_bundle_pem",
            "ca_certificate_pem",
            "refetch_ca_certificate",
            "expected_fingerprint",
        ]
        read_only_fields = ["id", "kind", "parent", *CERTIFICATE_FIELDS]
        extra_kwargs = {
            "scep_url": {"required": True, "allow_blank": False, "validators": [HTTP_URL]},
            "ndes_challenge_url": {"validators": [HTTP_URL]},
        }

    def get_has_static_challenge(self, ca: CertificateAuthority) -> bool:
        return bool(ca.scep_static_challenge)

    def get_has_ndes_password(self, ca: CertificateAuthority) -> bool:
        return bool(ca.ndes_password)

    # --- validation -----------------------------------------------------------------------

    def validate_slug(self, value: str) -> str:
        if self.instance is not None and value != self.instance.slug:
            raise serializers.ValidationError("The slug cannot change: public URLs use it.")
        return value

    def validate_tls_trust_bundle_pem(self, value: str) -> str:
        if value.strip():
            try:
                external.load_pem_certificates(value.encode())
            except ValueError as exc:
                raise serializers.ValidationError(f"TLS trust bundle: {exc}") from exc
        return value

    def validate_expected_fingerprint(self, value: str) -> str:
        try:
            return external.normalize_fingerprint(value) if value.strip() else ""
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        probe = self._probe(attrs)
        self._check_challenge(probe, attrs)
        attrs["certificates"] = self._ca_certificates(probe, attrs)
        return attrs

    def _probe(self, attrs: dict[str, Any]) -> CertificateAuthority:
        """The CA server as it would be saved (unsaved; secrets as stored)."""
        probe = CertificateAuthority(kind=CAKind.SCEP)
        if self.instance is not None:
            for model_field in CertificateAuthority._meta.concrete_fields:
                setattr(probe, model_field.attname, getattr(self.instance, model_field.attname))
        for name, value in attrs.items():
            if name not in NOT_MODEL_VALUES:
                setattr(probe, name, value)
        return probe

    def _check_challenge(self, probe: CertificateAuthority, attrs: dict[str, Any]) -> None:
        def given(field: str, stored: str) -> bool:
            return bool(attrs[field]) if field in attrs else bool(getattr(probe, stored))

        errors = {}
        kind = probe.scep_challenge_type
        if kind == ExternalChallengeType.STATIC and not given(
            "static_challenge", "scep_static_challenge"
        ):
            errors["static_challenge"] = ["A static challenge type needs the challenge."]
        if kind == ExternalChallengeType.DYNAMIC:
            for name in ("ndes_challenge_url", "ndes_username"):
                if not getattr(probe, name):
                    errors[name] = [NDES_NEEDS]
            if not given("ndes_password", "ndes_password"):
                errors["ndes_password"] = [NDES_NEEDS]
        if errors:
            raise serializers.ValidationError(errors)

    def _ca_certificates(
        self, probe: CertificateAuthority, attrs: dict[str, Any]
    ) -> list[x509.Certificate] | None:
        """What to pin (None keeps the pinned certificate), checked against the expected
        fingerprint; the same rules as the console's form."""
        pem = attrs.pop("ca_certificate_pem", "")
        fetch = attrs.pop("refetch_ca_certificate", False) or self.instance is None
        try:
            certificates = external.read_ca_certificates(probe, pem=pem, fetch=fetch)
        except ValueError as exc:
            raise serializers.ValidationError({"ca_certificate_pem": [str(exc)]}) from exc
        except UpstreamError as exc:
            raise serializers.ValidationError(
                {"scep_url": [f"CA certificate not fetched: {exc}"]}
            ) from exc
        expected = attrs.pop("expected_fingerprint", "")
        try:
            external.check_expected_fingerprint(
                certificates or [self.instance.certificate], expected
            )
        except external.FingerprintMismatch as exc:
            raise serializers.ValidationError({"expected_fingerprint": [str(exc)]}) from exc
        return certificates

    # --- saving ---------------------------------------------------------------------------

    def create(self, validated_data: dict[str, Any]) -> CertificateAuthority:
        return self._save(CertificateAuthority(kind=CAKind.SCEP), validated_data, before=None)

    def update(
        self, ca: CertificateAuthority, validated_data: dict[str, Any]
    ) -> CertificateAuthority:
        return self._save(ca, validated_data, before=snapshot(ca))

    def _save(
        self, ca: CertificateAuthority, data: dict[str, Any], *, before: dict[str, Any] | None
    ) -> CertificateAuthority:
        certificates = data.pop("certificates")
        for form_field, model_field in SECRET_FIELDS:
            if form_field in data:
                ca.set_secret(model_field, data.pop(form_field))
        for name, value in data.items():
            setattr(ca, name, value)
        if certificates is not None:
            external.pin(ca, certificates)
        with transaction.atomic():
            return external.save_external_ca(ca, before=before, request=self.context["request"])


class ChainEntrySerializer(serializers.Serializer):
    """One certificate of the GetCACert answer."""

    role = serializers.CharField(help_text='"issuing CA", "CA", "root CA" or "RA".')
    subject = serializers.CharField()
    issuer = serializers.CharField()
    not_before = serializers.DateTimeField()
    not_after = serializers.DateTimeField()
    fingerprint_sha256 = serializers.CharField(source="fingerprint")
    pinned = serializers.BooleanField(help_text="The pinned CA certificate.")


class ConnectionReportSerializer(serializers.Serializer):
    """What "Test connection" found. ``ok``: reachable and the pinned certificate presented."""

    ok = serializers.BooleanField()
    error = serializers.CharField(help_text='Why the CA could not be used; "" when it could.')
    capabilities = serializers.ListField(
        child=serializers.CharField(), help_text="What GetCACaps lists."
    )
    chain = ChainEntrySerializer(many=True, help_text="What GetCACert returned.")
    pinned_fingerprint = serializers.CharField(help_text="SHA-256 of the pinned CA certificate.")
    pin_matches = serializers.BooleanField(
        help_text="Whether GetCACert presents the pinned CA certificate."
    )


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
