"""Profiles, their payloads, assignments and per-device delivery."""

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.devices.models import Device, DeviceGroup
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.variables import validate_variables
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import (
    DeliveryStatus,
    PayloadKind,
    ProfilePlatform,
    VpnType,
    WifiSecurity,
)


class Profile(models.Model):
    """A configuration profile: ordered payloads delivered together to devices.

    ``version`` grows with every change, so devices get the profile again.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    platform = models.CharField(
        max_length=10, choices=ProfilePlatform.choices, default=ProfilePlatform.APPLE
    )
    identifier = models.CharField(
        max_length=200,
        unique=True,
        help_text="Reverse-DNS identifier (PayloadIdentifier), e.g. com.example.wifi.corp.",
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    signing_ca = models.ForeignKey(
        CertificateAuthority,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="sign with",
        help_text="Sign the .mobileconfig (CMS) with a profile-signing certificate of this CA.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProfilePayload(models.Model):
    """One payload of a profile. Which fields matter depends on ``kind``; text fields may
    hold lookup variables, filled per device at delivery."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="payloads")
    position = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=PayloadKind.choices)
    display_name = models.CharField(max_length=200)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # SCEP
    template = models.ForeignKey(
        CertificateTemplate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payloads",
        verbose_name="request template",
    )
    # Trusted certificate
    ca = models.ForeignKey(
        CertificateAuthority,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name="CA server (its chain)",
    )
    # Identity of Wi-Fi, VPN and email payloads: a SCEP payload of the same profile.
    identity = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="identity certificate",
    )
    # Wi-Fi
    ssid = models.CharField("SSID", max_length=32, blank=True)
    hidden_network = models.BooleanField(default=False)
    auto_join = models.BooleanField(default=True)
    wifi_security = models.CharField(max_length=20, choices=WifiSecurity.choices, blank=True)
    trusted_server_names = models.TextField(
        blank=True, help_text="RADIUS server certificate names, one per line (wildcards allowed)."
    )
    # VPN
    vpn_type = models.CharField("VPN type", max_length=12, choices=VpnType.choices, blank=True)
    server = models.CharField(max_length=255, blank=True, validators=[validate_variables])
    remote_identifier = models.CharField(
        max_length=255, blank=True, validators=[validate_variables]
    )
    account = models.CharField(max_length=255, blank=True, validators=[validate_variables])
    # Exchange ActiveSync / email
    host = models.CharField(max_length=255, blank=True, validators=[validate_variables])
    use_ssl = models.BooleanField("use SSL", default=True)
    email_address = models.CharField(max_length=255, blank=True, validators=[validate_variables])
    user_name = models.CharField(max_length=255, blank=True, validators=[validate_variables])

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.display_name}"

    def clean(self) -> None:
        required = {
            PayloadKind.SCEP: ["template"],
            PayloadKind.TRUSTED_CERTIFICATE: ["ca"],
            PayloadKind.WIFI: ["ssid", "wifi_security", "identity"],
            PayloadKind.VPN: ["vpn_type", "server", "identity"],
            PayloadKind.EMAIL: ["host", "email_address", "identity"],
        }.get(self.kind, [])
        errors = {
            name: "Required for this kind of payload."
            for name in required
            if not getattr(
                self, name if name not in {"template", "ca", "identity"} else f"{name}_id"
            )
        }
        if (
            self.identity_id
            and self.identity
            and (
                self.identity.kind != PayloadKind.SCEP
                or self.identity.profile_id != self.profile_id
            )
        ):
            errors["identity"] = "The identity must be a SCEP payload of the same profile."
        if errors:
            raise ValidationError(errors)


class ProfileAssignment(models.Model):
    """A profile assigned to a device group or to one device."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="assignments")
    group = models.ForeignKey(
        DeviceGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(group__isnull=False, device__isnull=True)
                    | models.Q(group__isnull=True, device__isnull=False)
                ),
                name="assignment_to_group_or_device",
            ),
            models.UniqueConstraint(fields=["profile", "group"], name="assignment_unique_group"),
            models.UniqueConstraint(fields=["profile", "device"], name="assignment_unique_device"),
        ]

    def __str__(self) -> str:
        return f"{self.profile} → {self.group or self.device}"


class Delivery(models.Model):
    """Where one profile stands on one device.

    The device needs the profile (again) while ``delivered_version`` lags the profile's
    version or ``delivered_generation`` lags ``generation`` (bumped by "redeliver" and by
    certificate renewal).
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="deliveries")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    delivered_version = models.PositiveIntegerField(null=True, blank=True)
    generation = models.PositiveIntegerField(default=1)
    delivered_generation = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["device", "profile"], name="delivery_unique_device_profile"
            )
        ]
        indexes = [models.Index(fields=["device", "status"], name="delivery_device_status")]

    def __str__(self) -> str:
        return f"{self.profile} on {self.device}: {self.get_status_display()}"
