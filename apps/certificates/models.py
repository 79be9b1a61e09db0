"""The certificate inventory."""

from functools import cached_property

from cryptography import x509
from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.certificates.choices import (
    CertificateSource,
    CertificateStatus,
    IdentityPurpose,
    RevocationCause,
)
from apps.core.fields import EncryptedSecretField
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
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="certificates",
        verbose_name="issuer",
        help_text="The CA server it came from; empty for a user-provided certificate.",
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
    renewal_triggered_at = models.DateTimeField(
        "renewal re-triggered at",
        null=True,
        blank=True,
        help_text="When the renewal sweep redelivered the profile for this certificate (once).",
    )
    pending_revocation_cause = models.CharField(
        max_length=30, choices=RevocationCause.choices, blank=True
    )
    pending_revocation_since = models.DateTimeField(null=True, blank=True)
    revoke_after = models.DateTimeField(
        "revocation due at",
        null=True,
        blank=True,
        help_text="End of the grace period of a pending revocation.",
    )
    removed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a pending revocation ended on a template with revocation disabled.",
    )
    revoke_at_ca_requested_at = models.DateTimeField(
        "revocation at the CA requested at",
        null=True,
        blank=True,
        help_text="An external SCEP CA cannot be asked over SCEP to revoke: revoked in "
        "mdmcerts at this time, it waits for an administrator to revoke it at the CA.",
    )
    revoke_at_ca_done_at = models.DateTimeField(
        "revoked at the CA at",
        null=True,
        blank=True,
        help_text="When an administrator marked it revoked at the external CA.",
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
            models.Index(fields=["status", "revoke_after"], name="certificate_revoke_due"),
            models.Index(
                fields=["revoke_at_ca_requested_at"],
                condition=models.Q(
                    revoke_at_ca_requested_at__isnull=False, revoke_at_ca_done_at__isnull=True
                ),
                name="certificate_revoke_at_ca_todo",
            ),
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

    @property
    def awaits_revocation_at_ca(self) -> bool:
        """Revoked in mdmcerts, and still to be revoked by an administrator at its
        external CA."""
        return self.revoke_at_ca_requested_at is not None and self.revoke_at_ca_done_at is None


class CertificateToRevokeAtCA(Certificate):
    """The console's "revoke at the CA" list: certificates of external SCEP CAs that
    mdmcerts revoked and that an administrator must revoke at the CA itself (SCEP has no
    revocation request)."""

    class Meta:
        proxy = True
        verbose_name = "certificate to revoke at the CA"
        verbose_name_plural = "certificates to revoke at the CA"


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


class Identity(models.Model):
    """A certificate whose private key mdmcerts holds, to deliver as a PKCS#12 payload:
    server-generated (early or on demand), user-provided (uploaded by its owner for a
    purpose) or single-file (one identity for many devices). The key is encrypted under
    the KEK; no form, admin page or API shows it.

    ``current`` is cleared when a renewal replaces the identity; at most one current
    identity exists per device and template, and per owner and purpose.
    """

    certificate = models.OneToOneField(
        Certificate, on_delete=models.CASCADE, related_name="identity"
    )
    private_key = EncryptedSecretField()
    chain_pem = models.TextField(
        "certificate chain (PEM)", blank=True, help_text="Issuer certificates, leaf excluded."
    )
    template = models.ForeignKey(
        CertificateTemplate,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="identities",
    )
    device = models.ForeignKey(
        "devices.Device",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="identities",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="identities",
        help_text="The owner of a user-provided identity.",
    )
    purpose = models.CharField(
        max_length=30,
        blank=True,
        choices=IdentityPurpose.choices,
        help_text="Purpose of a user-provided identity.",
    )
    current = models.BooleanField(default=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "identities"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["device", "template"],
                condition=models.Q(current=True, device__isnull=False, template__isnull=False),
                name="identity_one_current_per_device_template",
            ),
            models.UniqueConstraint(
                fields=["user", "purpose"],
                condition=models.Q(current=True, user__isnull=False) & ~models.Q(purpose=""),
                name="identity_one_current_per_user_purpose",
            ),
        ]
        indexes = [
            models.Index(fields=["delivered_at", "created_at"], name="identity_undelivered"),
        ]

    def __str__(self) -> str:
        return f"identity {self.certificate}"


class LifecycleSettings(models.Model):
    """Settings of the lifecycle sweeps an administrator edits in the admin (one row)."""

    revocation_grace_hours = models.PositiveIntegerField(
        "certificate revocation grace period (hours)",
        default=24,
        help_text="How long a certificate stays pending revocation before it is revoked, "
        "so a device that briefly fails to report it is not punished. Templates may "
        "override it.",
    )
    expiry_notice_days = models.PositiveIntegerField(
        "expiry notice window (days)",
        default=30,
        help_text="The daily digest lists certificates expiring within this many days that "
        "will not renew by themselves.",
    )
    expiry_notice_recipients = models.TextField(
        blank=True,
        help_text="Email addresses, one per line. Blank: every active superuser with an "
        "email address.",
    )
    identity_purge_days = models.PositiveIntegerField(
        "delete undelivered identities after (days)",
        default=14,
        help_text="A server-generated identity not delivered within this time is deleted "
        "and its certificate revoked; it is generated again at the next delivery.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "lifecycle settings"
        verbose_name_plural = "lifecycle settings"

    def __str__(self) -> str:
        return "Lifecycle settings"

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "LifecycleSettings":
        """The row, created on first use with the grace period of
        ``MDMCERTS_REVOCATION_GRACE_HOURS``."""
        defaults = {"revocation_grace_hours": settings.MDMCERTS_REVOCATION_GRACE_HOURS}
        return cls.objects.get_or_create(pk=1, defaults=defaults)[0]
