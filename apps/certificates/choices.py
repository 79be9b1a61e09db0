from django.db import models


class CertificateStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PENDING_REVOCATION = "pending_revocation", "Pending revocation"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"
    SUPERSEDED = "superseded", "Superseded"
    REMOVED = "removed", "Removed (not revoked)"


class CertificateSource(models.TextChoices):
    SCEP = "scep", "SCEP"
    SERVER_GENERATED = "server_generated", "Server-generated"
    USER_PROVIDED = "user_provided", "User-provided"
    SINGLE_FILE = "single_file", "Single file identity"
    MANUAL = "manual", "Manual"


class RevocationCause(models.TextChoices):
    """Why a certificate is pending revocation (or was revoked or removed by the sweep)."""

    UNENROLLED = "unenrolled", "Device unenrolled"
    WIPED = "wiped", "Device wiped"
    DELETED = "deleted", "Device deleted"
    RETIRED = "retired", "Device retired"
    UNASSIGNED = "unassigned", "Profile unassigned from the device"
    MISSING = "missing", "No longer reported in the device's inventory"
    OWNER_DEACTIVATED = "owner_deactivated", "Owner deactivated"
    SUPERSEDED = "superseded", "Superseded by renewal"
    UNDELIVERED = "undelivered", "Server-generated identity not delivered in time"


class IdentityPurpose(models.TextChoices):
    """What a user-provided identity is for; a profile payload asks for one purpose."""

    SMIME_SIGNING = "smime_signing", "S/MIME signing"
    SMIME_ENCRYPTION = "smime_encryption", "S/MIME encryption"
    IDENTITY = "identity", "Identity (Wi-Fi, VPN, authentication)"
