from django.db import models


class ProfilePlatform(models.TextChoices):
    APPLE = "apple", "Apple (iOS, iPadOS, macOS)"
    ANY = "any", "Any platform (neutral JSON)"


class PayloadKind(models.TextChoices):
    SCEP = "scep", "SCEP"
    TRUSTED_CERTIFICATE = "trusted_certificate", "Trusted certificate"
    WIFI = "wifi", "Wi-Fi"
    VPN = "vpn", "VPN"
    EMAIL = "email", "Exchange ActiveSync / email"


class WifiSecurity(models.TextChoices):
    WPA2_ENTERPRISE = "wpa2_enterprise", "WPA2 Enterprise"
    WPA3_ENTERPRISE = "wpa3_enterprise", "WPA3 Enterprise"


class VpnType(models.TextChoices):
    IKEV2 = "ikev2", "IKEv2"
    ANYCONNECT = "anyconnect", "Cisco AnyConnect"
    IPSEC = "ipsec", "IPSec (Cisco)"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    INSTALLED = "installed", "Installed"
    FAILED = "failed", "Failed"
    REMOVAL_PENDING = "removal_pending", "Removal pending"
    REMOVED = "removed", "Removed"
