from django.db import models


class AuditAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Changed"
    DELETE = "delete", "Deleted"
    ISSUE = "issue", "Certificate issued"
    ISSUE_FAILED = "issue_failed", "Issuance failed"
    REVOKE = "revoke", "Certificate revoked"
    DOWNLOAD = "download", "Downloaded"
    REWRAP = "rewrap", "Secrets rewrapped"
