"""The certificate inventory."""

from functools import cached_property

from cryptography import x509
from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import RequestedNames
from apps.pki import crypto
from apps.pki.choices import RevocationReason
from apps.pki.models import CertificateAuthority


class CertificateQuerySet(models.QuerySet):
    def expiring_within(self, days: int) -> "CertificateQuerySet":
        now = timezone.now()
        return self.filter(not_after__gt=now, not_after__lte=now + timezone.timedelta(days=days))


class Certificate(models.Model):
    """A certificate mdmcerts issued, relayed or was given, with its lifecycle state.

    The public certificate only; private keys of server-generated or uploaded identities
    live encrypted elsewhere.
    """

    ca = models.ForeignKey(
        CertificateAuthority,
        on_delete=models.PROTECT,
        related_name="certificates",
        verbose_name="issuer",
    )
    template = models.ForeignKey(
        CertificateTemplate,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="certificates",
    )
    serial = models.CharField("serial number", max_length=40, help_text="Hexadecimal.")
    subject = models.CharField(max_length=1000)
    subject_alt_names = models.TextField(
        "subject alternative names", blank=True, help_text="One per line, TYPE:value."
    )
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    fingerprint_sha256 = models.CharField("SHA-256 fingerprint", max_length=64, unique=True)
    certificate_pem = models.TextField("certificate (PEM)")
    status = models.CharField(
        max_length=20, choices=CertificateStatus.choices, default=CertificateStatus.ACTIVE
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(
        max_length=30, choices=RevocationReason.choices, blank=True
    )
    source = models.CharField(max_length=20, choices=CertificateSource.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="certificates",
    )
    device = models.ForeignKey(
        "devices.Device",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="certificates",
    )
    profile = models.ForeignKey(
        "profiles.Profile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="certificates",
    )
    replaces = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_by",
        help_text="The certificate this one renewed.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ca", "serial"], name="certificate_unique_serial_per_ca"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "not_after"], name="certificate_status_expiry"),
            models.Index(fields=["template", "status"], name="certificate_template_status"),
            models.Index(fields=["device", "status"], name="certificate_device_status"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} ({self.serial[:16]})"

    @cached_property
    def certificate(self) -> x509.Certificate:
        return crypto.load_pem_certificate(self.certificate_pem)

    @property
    def serial_colon_hex(self) -> str:
        return crypto.colon_hex(self.serial.rjust(len(self.serial) + len(self.serial) % 2, "0"))

    @property
    def is_expired(self) -> bool:
        return self.not_after <= timezone.now()


class CertificateRequest(models.Model):
    """One enrollment transaction (SCEP PKCSReq or RenewalReq): what was asked, by whom,
    and what came of it. A pending request waits for an administrator's decision.

    The CSR itself is not kept (it may carry the challenge in clear): only its public key
    and the names it asked for.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending approval"
        ISSUED = "issued", "Issued"
        REJECTED = "rejected", "Rejected"

    template = models.ForeignKey(
        CertificateTemplate, on_delete=models.CASCADE, related_name="requests"
    )
    transaction_id = models.CharField(max_length=128)
    renewal = models.BooleanField(default=False)
    public_key_sha256 = models.CharField(max_length=64)
    public_key_der = models.BinaryField()
    requested_subject = models.CharField(
        max_length=1000, blank=True, help_text="The subject the request asked for (RFC 4514)."
    )
    requested_sans = models.TextField(
        blank=True,
        help_text="SANs taken from the request, one TYPE:value per line "
        "(templates with the subject from the request only).",
    )
    status = models.CharField(max_length=10, choices=Status.choices)
    reason = models.TextField(blank=True)
    device = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    profile = models.ForeignKey(
        "profiles.Profile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The profile whose delivery minted the challenge.",
    )
    renewal_of = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    certificate = models.OneToOneField(
        Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="request"
    )
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "transaction_id"], name="request_unique_transaction"
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="request_status")]

    def __str__(self) -> str:
        return f"{self.requested_subject or self.transaction_id} ({self.get_status_display()})"

    @property
    def requested_names(self) -> RequestedNames:
        pairs = (line.split(":", 1) for line in self.requested_sans.splitlines() if ":" in line)
        return RequestedNames(
            subject=self.requested_subject, sans=tuple((kind, value) for kind, value in pairs)
        )
