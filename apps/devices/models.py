"""Devices and the user attributes that fill lookup variables."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.devices.choices import DeviceStatus, Platform


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

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

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
