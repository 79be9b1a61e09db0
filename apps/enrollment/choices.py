from cryptography.x509.oid import ExtendedKeyUsageOID
from django.db import models


class SanType(models.TextChoices):
    RFC822 = "rfc822", "RFC 822 name (email)"
    DNS = "dns", "DNS name"
    URI = "uri", "Uniform resource identifier"
    UPN = "upn", "User principal name (NT principal name)"


class ChallengeType(models.TextChoices):
    NONE = "none", "None"
    STATIC = "static", "Static"
    DYNAMIC = "dynamic", "Dynamic"


class KeyGeneration(models.TextChoices):
    DEVICE = "device", "On the device"
    SERVER = "server", "On the server"


class ExternalDelivery(models.TextChoices):
    """How a device gets a certificate from an external SCEP CA (CA kind ``scep``)."""

    DELEGATE = "delegate", "Delegate: the device enrolls with the CA directly"
    PROXY = "proxy", "Proxy: the device enrolls through mdmcerts"
    SERVER_SIDE = "server_side", "Server-side: mdmcerts enrolls and delivers a PKCS#12"


class SubjectSource(models.TextChoices):
    TEMPLATE = "template", "Template"
    REQUEST = "request", "Request (CSR), limited to the allowed SAN types"


class ExtendedKeyUsage(models.TextChoices):
    """Well-known EKUs by OID; templates may add custom OIDs beside them."""

    CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string, "Client authentication"
    SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH.dotted_string, "Server authentication"
    EMAIL_PROTECTION = ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string, "Email protection"
    CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING.dotted_string, "Code signing"
