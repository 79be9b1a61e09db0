"""Request helpers."""

from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str | None:
    """The client address as the server saw it (the proxy sets REMOTE_ADDR for us)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None
