"""Token authentication for the staff API against hashed ``ApiToken`` rows."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.core.models import ApiToken, hash_token

LAST_USED_RESOLUTION = timedelta(minutes=5)


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``; the key is compared by its hash."""

    def authenticate_credentials(self, key: str):
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=hash_token(key), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
