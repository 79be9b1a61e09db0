"""Core models: staff API tokens."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX_LENGTH = 8


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def create_token(self, *, user, name: str, key: str | None = None) -> tuple["ApiToken", str]:
        """Create a token and return it with its key, which is shown this once only."""
        token = self.model(user=user, name=name)
        key = token.assign_key(key)
        token.save()
        return token, key


class ApiToken(models.Model):
    """A staff REST API token. Only its SHA-256 is stored; the key is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=TOKEN_PREFIX_LENGTH, help_text="First characters, to tell tokens apart."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def assign_key(self, key: str | None = None) -> str:
        """Give the token a key (a new random one by default) and return it, once."""
        key = key or secrets.token_urlsafe(32)
        self.prefix, self.key_hash = key[:TOKEN_PREFIX_LENGTH], hash_token(key)
        return key
