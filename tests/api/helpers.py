"""Helpers for the staff API tests."""

from rest_framework.test import APIClient

from apps.core.models import ApiToken


def token_client(user) -> APIClient:
    """A client that authenticates as ``user`` with a fresh staff API token."""
    _, key = ApiToken.objects.create_token(user=user, name=f"{user.username} tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def drf_datetime(value) -> str:
    """A UTC datetime as DRF renders it."""
    return value.isoformat().replace("+00:00", "Z")
