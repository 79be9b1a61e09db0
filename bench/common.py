"""What the benchmark scripts share: their setup error and their own PostgreSQL database."""

import contextlib
import urllib.parse


class SetupFailed(Exception):
    """The run could not start (or a measured process failed); the message says why."""


def fresh_postgres_database(
    configured: str, stack: contextlib.ExitStack, *, suffix: str, keep: bool
) -> str:
    """A fresh database ``<name><suffix>`` on the server of ``configured`` (its URL), created
    afresh and dropped when ``stack`` closes unless ``keep``."""
    import psycopg
    from psycopg import sql

    parts = urllib.parse.urlsplit(configured)
    name = parts.path.lstrip("/") or "mdmcerts"
    name = name if name.endswith(suffix) else f"{name}{suffix}"
    admin_url = urllib.parse.urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))

    def execute(statement: sql.Composable) -> None:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(statement)

    try:
        execute(drop)
        execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise SetupFailed(f"cannot create PostgreSQL database {name}: {exc}") from exc
    if not keep:
        stack.callback(execute, drop)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
