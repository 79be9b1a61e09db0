"""Append-only audit events."""

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone

from apps.audit.choices import AuditAction


class AppendOnlyError(Exception):
    """An audit event was about to be changed or deleted."""


class AuditEvent(models.Model):
    """Who did what to which object, when and from where, with a field-level diff.

    Secrets never reach ``changes``: their old and new values are replaced by a marker.
    Rows are append-only: saving an existing row or deleting one raises.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_repr = models.CharField(
        "actor",
        max_length=150,
        blank=True,
        help_text="The actor's username at the time, or the system part that acted.",
    )
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField("object", max_length=255, blank=True)
    changes = models.JSONField(
        default=dict, blank=True, help_text="Field name to [old, new]; secrets redacted."
    )
    message = models.TextField(blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.object_repr}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events cannot be deleted")
