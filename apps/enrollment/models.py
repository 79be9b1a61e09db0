"""Request templates: what a certificate from a CA server will say."""

import hmac

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from apps.core import secrets
from apps.core.fields import EncryptedSecretField, secret_context
from apps.enrollment.choices import (
    ChallengeType,
    ExternalDelivery,
    KeyGeneration,
    SanType,
    SubjectSource,
)
from apps.enrollment.variables import validate_variables
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority

FORBIDDEN_EKU = x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string


def validate_subject_pattern(value: str) -> None:
    try:
        crypto.parse_name_pattern(value)
    except crypto.NameSyntaxError as exc:
        raise ValidationError(f"Subject: {exc}.", code="subject_syntax") from exc
    validate_variables(value)


def validate_oid_list(value: list) -> None:
    if not isinstance(value, list):
        raise ValidationError("Extended key usages must be a list of OIDs.")
    for oid in value:
        try:
            x509.ObjectIdentifier(str(oid))
        except ValueError as exc:
            raise ValidationError(f"{oid!r} is not an OID such as 1.3.6.1.5.5.7.3.2.") from exc
        if oid == FORBIDDEN_EKU:
            raise ValidationError("anyExtendedKeyUsage is never issued; list the usages needed.")


def validate_san_types(value: list) -> None:
    if not isinstance(value, list) or any(v not in SanType.values for v in value):
        raise ValidationError(f"Allowed SAN types are a list of: {', '.join(SanType.values)}.")


class CertificateTemplate(models.Model):
    """A request template: subject, SANs, key and usage rules, lifecycle and challenge policy.

    The certificate a template produces is decided here, never by what a request asks for,
    unless ``subject_source`` is "request" (and then only the allowed SAN types are copied).
    """

    name = models.CharField("certificate template name", max_length=200, unique=True)
    slug = models.SlugField(
        max_length=64, unique=True, help_text="The template's SCEP endpoint: /scep/<slug>/."
    )
    description = models.TextField(blank=True)
    ca = models.ForeignKey(
        CertificateAuthority,
        on_delete=models.PROTECT,
        related_name="templates",
        verbose_name="CA server",
        # A single file identity CA server holds one identity and issues nothing.
        limit_choices_to=~models.Q(kind="single_file"),
    )
    subject = models.CharField(
        max_length=500,
        validators=[validate_subject_pattern],
        help_text="Subject DN, most significant first, e.g. C=US,O=Zylker,CN=%firstname% or "
        "CN=$DEVICE_SN$. Escape a comma inside a value as \\,.",
    )
    key_algorithm = models.CharField(
        "key type and size",
        max_length=10,
        choices=KeyAlgorithm.choices,
        default=KeyAlgorithm.RSA_2048,
        help_text="The smallest key accepted from a request, and the key generated on the server.",
    )
    key_usage_digital_signature = models.BooleanField("use as digital signature", default=True)
    key_usage_key_encipherment = models.BooleanField("use for key encipherment", default=True)
    extended_key_usages = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_oid_list],
        help_text="OIDs of the extended key usages (client authentication is 1.3.6.1.5.5.7.3.2).",
    )
    validity_days = models.PositiveIntegerField(
        default=365,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Never beyond the CA's own expiry.",
    )
    auto_renew = models.BooleanField("certificate auto renewal", default=True)
    renew_before_days = models.PositiveIntegerField(
        "certificate automatic renewal before (days)",
        default=30,
        help_text="Renew this many days before expiry (at half-life when validity is shorter "
        "than twice this).",
    )
    revocation_enabled = models.BooleanField(
        "enable certificate revocation",
        default=True,
        help_text="Revoke certificates when their device or profile goes away.",
    )
    revocation_grace_hours = models.PositiveIntegerField(
        "certificate revocation grace period (hours)",
        null=True,
        blank=True,
        help_text="Blank: the global setting (Lifecycle settings).",
    )
    challenge_type = models.CharField(
        max_length=10, choices=ChallengeType.choices, default=ChallengeType.DYNAMIC
    )
    static_challenge = EncryptedSecretField(verbose_name="enrollment challenge password")
    max_failed_attempts = models.PositiveSmallIntegerField(
        "maximum number of failed attempts", default=5, validators=[MinValueValidator(1)]
    )
    retry_interval_seconds = models.PositiveIntegerField(
        "time interval between attempts (seconds)", default=60
    )
    key_generation = models.CharField(
        "key generation location",
        max_length=10,
        choices=KeyGeneration.choices,
        default=KeyGeneration.DEVICE,
    )
    subject_source = models.CharField(
        max_length=10, choices=SubjectSource.choices, default=SubjectSource.TEMPLATE
    )
    allowed_request_san_types = models.JSONField(
        "SAN types allowed from a request",
        default=list,
        blank=True,
        validators=[validate_san_types],
    )
    approval_required = models.BooleanField(default=False)
    allow_single_des = models.BooleanField(
        "accept single-DES requests (legacy clients)",
        default=False,
        help_text="Single DES is broken. Only for clients that can do nothing else, such as "
        "micromdm scepclient 2.1; replies are still encrypted with AES.",
    )
    external_delivery = models.CharField(
        "delivery from an external CA",
        max_length=12,
        choices=ExternalDelivery.choices,
        default=ExternalDelivery.PROXY,
        help_text="Only for a template of an external SCEP CA. Server-side goes with key "
        "generation on the server, delegate and proxy with key generation on the device.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "request template"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.challenge_type == ChallengeType.STATIC and not self.static_challenge:
            errors["challenge_type"] = "A static challenge needs its enrollment challenge password."
        if self.subject_source == SubjectSource.TEMPLATE and self.allowed_request_san_types:
            errors["allowed_request_san_types"] = (
                "Only used when the subject comes from the request."
            )
        errors.update(self._external_delivery_errors())
        if errors:
            raise ValidationError(errors)

    @property
    def uses_external_ca(self) -> bool:
        return self.ca_id is not None and self.ca.is_external_scep

    def _external_delivery_errors(self) -> dict[str, str]:
        """Server-side delivery and server key generation go together for an external CA."""
        if not self.uses_external_ca:
            return {}
        server_side = self.external_delivery == ExternalDelivery.SERVER_SIDE
        if server_side and self.key_generation != KeyGeneration.SERVER:
            return {"external_delivery": "Server-side delivery needs key generation on the server."}
        if not server_side and self.key_generation == KeyGeneration.SERVER:
            return {
                "external_delivery": "With key generation on the server, an external CA's "
                "certificate can only be delivered server-side."
            }
        return {}

    def audit_extra(self) -> dict:
        """SAN rows belong to the template's history."""
        if self.pk is None:
            return {}
        return {
            "subject_alternative_names": [
                f"{row.san_type}:{row.value}" for row in self.san_rows.all()
            ]
        }

    def set_static_challenge(self, value: str) -> None:
        self.static_challenge = (
            secrets.encrypt(value.encode(), context=secret_context(type(self), "static_challenge"))
            if value
            else ""
        )

    def reveal_static_challenge(self) -> str:
        """The static challenge, for a profile or a script that must hand it to a device."""
        if not self.static_challenge:
            return ""
        return secrets.decrypt(
            self.static_challenge, context=secret_context(type(self), "static_challenge")
        ).decode()

    def static_challenge_matches(self, candidate: str) -> bool:
        expected = self.reveal_static_challenge()
        return bool(expected) and hmac.compare_digest(expected.encode(), candidate.encode())


class TemplateSubjectAltName(models.Model):
    """One subject alternative name row of a template; the value may hold variables."""

    template = models.ForeignKey(
        CertificateTemplate, on_delete=models.CASCADE, related_name="san_rows"
    )
    san_type = models.CharField(
        "subject alternative name type", max_length=10, choices=SanType.choices
    )
    value = models.CharField(
        "subject alternative name value", max_length=500, validators=[validate_variables]
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = "subject alternative name"
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.get_san_type_display()}: {self.value}"


class Challenge(models.Model):
    """A one-time dynamic challenge, bound to a template and a device (or user).

    Only a salted SHA-256 of its secret part is stored. The challenge a device gets is the
    public id followed by the secret, so it is found without scanning.
    """

    public_id = models.CharField(max_length=12, unique=True, editable=False)
    salt = models.CharField(max_length=32, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    template = models.ForeignKey(
        CertificateTemplate, on_delete=models.CASCADE, related_name="challenges"
    )
    device = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.CASCADE, related_name="challenges"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    profile = models.ForeignKey(
        "profiles.Profile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The profile whose delivery minted it.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="challenge_expiry")]

    def __str__(self) -> str:
        return f"challenge {self.public_id} for {self.template}"

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and self.expires_at > timezone.now()


class AttemptCounter(models.Model):
    """Failed enrollment attempts of one source or device against one template.

    When ``failures`` reaches the template's maximum, the key is refused until
    ``locked_until`` (the template's time interval between attempts).
    """

    class Scope(models.TextChoices):
        SOURCE = "source", "Source address"
        DEVICE = "device", "Device"

    template = models.ForeignKey(CertificateTemplate, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=10, choices=Scope.choices)
    identifier = models.CharField(max_length=128)
    failures = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["template", "scope", "identifier"], name="attempt_counter_unique_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.identifier} on {self.template}"


class ExternalEnrollment(models.Model):
    """A server-side enrollment with an external SCEP CA that has not ended yet.

    Stored before the first request leaves, so an attempt that times out, or that the CA
    leaves PENDING, is resumed by the next generation sweep with the same key and
    transactionID (PKCSReq again while unanswered, CertPoll once PENDING): the CA never
    sees a second transaction. The key is encrypted under the KEK. One per device and
    template; deleted when the CA answers SUCCESS or FAILURE.
    """

    template = models.ForeignKey(
        CertificateTemplate, on_delete=models.CASCADE, related_name="external_enrollments"
    )
    device = models.ForeignKey(
        "devices.Device", on_delete=models.CASCADE, related_name="external_enrollments"
    )
    profile = models.ForeignKey(
        "profiles.Profile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    replaces = models.ForeignKey(
        "certificates.Certificate",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The certificate this enrollment renews.",
    )
    transaction_id = models.CharField("transaction ID", max_length=128, editable=False)
    csr_der = models.BinaryField("certificate signing request (DER)", editable=False)
    private_key = EncryptedSecretField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    pending_since = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the CA first answered PENDING; empty while the request is unanswered.",
    )
    last_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)

    class Meta:
        verbose_name = "pending external enrollment"
        constraints = [
            models.UniqueConstraint(
                fields=["device", "template"], name="external_enrollment_one_per_device"
            )
        ]

    def __str__(self) -> str:
        return (
            f"enrollment {self.transaction_id[:12]} of device {self.device_id} at {self.template}"
        )
