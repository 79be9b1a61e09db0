"""Development defaults for secrets, generated once into ``var/``.

Settings use these only when ``DEBUG`` is on and the variable is not set; a production
start-up without the variable stops with a clear message instead (see settings.py).
"""

import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path


class MissingSetting(RuntimeError):
    """A variable that production needs is not set."""


def new_secret_key() -> str:
    return secrets.token_urlsafe(50)


def new_kek() -> str:
    """A key-encryption key in the ``MDMCERTS_KEK`` format: ``<key id>:<base64 32 bytes>``."""
    key_id = "k" + secrets.token_hex(3)
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"


def dev_default(path: Path, name: str, factory: Callable[[], str]) -> str:
    """Read a generated development secret, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = factory()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    print(
        f"WARNING: {name} is not set; generated a development value in {path}. "
        f"Set {name} in the environment for production.",
        file=sys.stderr,
    )
    return value


def required_or_dev(
    env_value: str | None, *, debug: bool, path: Path, name: str, factory: Callable[[], str]
) -> str:
    """The variable's value, a generated development default, or a clear stop."""
    if env_value:
        return env_value
    if debug:
        return dev_default(path, name, factory)
    raise MissingSetting(
        f"{name} must be set when DEBUG is off. See .env.example for its format "
        f'(generate one with: python -c "from apps.core.devsecrets import '
        f'{factory.__name__}; print({factory.__name__}())").'
    )
