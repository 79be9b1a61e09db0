from django.db import models


class CertificateStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PENDING_REVOCATION = "pending_revocation", "Pending revocation"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"
    SUPERSEDED = "superseded", "Superseded"


class CertificateSource(models.TextChoices):
    SCEP = "scep", "SCEP"
    SERVER_GENERATED = "server_generated", "Server-generated"
    USER_PROVIDED = "user_provided", "User-provided"
    SINGLE_FILE = "single_file", "Single file identity"
    MANUAL = "manual", "Manual"
