"""Helpers for tests that run a server in a subprocess: a free local port for it, and the
test database's URL for a process that shares the database."""

import socket
import urllib.parse


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """``postgres://`` URL of the database ``settings_dict`` (Django's) describes."""
    user = urllib.parse.quote(settings_dict["USER"] or "")
    password = settings_dict["PASSWORD"]
    credentials = f"{user}:{urllib.parse.quote(password)}" if password else user
    host, port = settings_dict["HOST"] or "127.0.0.1", settings_dict["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"
