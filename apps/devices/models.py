"""Devices and the user attributes that fill lookup variables."""

import secrets

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.core.models import hash_token
from apps.devices.choices import APPLE_PLATFORMS, DeviceStatus, Platform

CODE_PREFIX_LENGTH = 8
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
CODE_LENGTH = 32


# What a device reports about itself (enroll and check-in), besides its name.
REPORTED_FACTS = (
    "platform",
    "serial_number",
    "udid",
    "uuid",
    "imei",
    "imsi",
    "wifi_mac",
    "client_id",
)


class Device(models.Model):
    """A managed device: its identifiers fill the $DEVICE_…$ variables of its certificates."""

    name = models.CharField(max_length=200)
    platform = models.CharField(max_length=10, choices=Platform.choices)
    serial_number = models.CharField(max_length=100, blank=True, db_index=True)
    udid = models.CharField("UDID", max_length=100, blank=True, db_index=True)
    uuid = models.CharField("UUID", max_length=64, blank=True)
    imei = models.CharField("IMEI", max_length=32, blank=True)
    imsi = models.CharField("IMSI", max_length=32, blank=True)
    wifi_mac = models.CharField("Wi-Fi MAC", max_length=32, blank=True)
    client_id = models.CharField(max_length=100, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="devices",
    )
    status = models.CharField(
        max_length=12, choices=DeviceStatus.choices, default=DeviceStatus.ENROLLED
    )
    enrolled_at = models.DateTimeField(default=timezone.now)
    last_checkin_at = models.DateTimeField("last check-in", null=True, blank=True)
    last_inventory_at = models.DateTimeField("last inventory scan", null=True, blank=True)
    scan_requested = models.BooleanField(
        default=False, help_text="Ask the device for its installed certificates at next check-in."
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_apple(self) -> bool:
        """Whether the device installs Apple configuration profiles (.mobileconfig)."""
        return self.platform in APPLE_PLATFORMS

    def lookup_values(self) -> dict[str, str]:
        """This device's values for the lookup variables."""
        return {
            "DEVICE_ID": str(self.pk),
            "DEVICE_NAME": self.name,
            "DEVICE_SN": self.serial_number,
            "DEVICE_UDID": self.udid,
            "DEVICE_UUID": self.uuid,
            "DEVICE_IMEI": self.imei,
            "DEVICE_IMSI": self.imsi,
            "DEVICE_MAC": self.wifi_mac,
            "DEVICE_CLIENT_ID": self.client_id,
        }


class UserAttributes(models.Model):
    """Directory attributes of a user, for lookup variables (one per Django user)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attributes"
    )
    upn = models.CharField("user principal name", max_length=255, blank=True)
    sid = models.CharField("security identifier", max_length=184, blank=True)
    dn = models.CharField("distinguished name", max_length=500, blank=True)
    display_name = models.CharField(max_length=200, blank=True)
    locale = models.CharField(max_length=20, blank=True)
    realm = models.CharField(max_length=200, blank=True)
    custom1 = models.CharField("custom 1", max_length=255, blank=True)
    custom2 = models.CharField("custom 2", max_length=255, blank=True)
    custom3 = models.CharField("custom 3", max_length=255, blank=True)
    custom4 = models.CharField("custom 4", max_length=255, blank=True)

    class Meta:
        verbose_name = "user attributes"
        verbose_name_plural = "user attributes"

    def __str__(self) -> str:
        return f"attributes of {self.user}"

    def lookup_values(self) -> dict[str, str]:
        return {
            "USER_UPN": self.upn,
            "USER_SID": self.sid,
            "USER_DN": self.dn,
            "DISPLAY_NAME": self.display_name,
            "USER_LOCALE": self.locale,
            "REALM": self.realm,
            "USER_CUSTOM1": self.custom1,
            "USER_CUSTOM2": self.custom2,
            "USER_CUSTOM3": self.custom3,
            "USER_CUSTOM4": self.custom4,
        }


class DeviceGroup(models.Model):
    """A label: profiles assigned to it go to every member device."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    devices = models.ManyToManyField(Device, blank=True, related_name="groups")

    class Meta:
        ordering = ["name"]
        verbose_name = "device group"

    def __str__(self) -> str:
        return self.name

    def audit_extra(self) -> dict[str, list[int]]:
        """Members, so that the audit diff shows who joined or left."""
        if self.pk is None:
            return {"devices": []}
        return {"devices": sorted(self.devices.values_list("pk", flat=True))}


class EnrollmentCode(models.Model):
    """A code a device presents once to enroll. Only its SHA-256 is stored; its first
    characters (``prefix``) tell codes apart in the console."""

    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=8, editable=False)
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Devices enrolled with this code belong to this user.",
    )
    group = models.ForeignKey(
        DeviceGroup,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="enrollment_codes",
        help_text="Devices enrolled with this code join this group.",
    )
    max_uses = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=1,
        validators=[MinValueValidator(1)],
        help_text="1 for a one-time code; empty for no limit.",
    )
    uses = models.PositiveIntegerField(default=0, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def assign_code(self) -> str:
        """Give the row a new random code and return it: the only time it is seen."""
        # Letters and digits only: people type codes, and command lines misread a leading "-".
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self.prefix, self.code_hash = code[:CODE_PREFIX_LENGTH], hash_token(code)
        return code

    def state(self, now=None) -> str:
        """``usable``, ``revoked``, ``expired`` or ``used up``, at ``now``."""
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used up"
        return "usable"


class DeviceToken(models.Model):
    """A device's API credential. Only its SHA-256 is stored; the device was shown it once."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token of {self.device}"


class InstalledCertificate(models.Model):
    """A certificate a device reported installed at its last inventory scan."""

    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="installed_certificates"
    )
    fingerprint_sha256 = models.CharField("SHA-256 fingerprint", max_length=64)
    subject = models.CharField(max_length=1000, blank=True)
    issuer = models.CharField(max_length=1000, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    certificate = models.ForeignKey(
        "certificates.Certificate",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="installations",
        help_text="The inventory row, when mdmcerts knows it.",
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "fingerprint_sha256"], name="installed_certificate_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} on {self.device}"
