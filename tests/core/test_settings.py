"""Settings from the environment: production refuses to start without its secrets,
development generates them, production settings pass ``check --deploy``, and the
configured Celery broker carries messages."""

import os
import re
import secrets
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from apps.core.devsecrets import new_kek
from apps.core.secrets import parse_kek
from mdmcerts.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, var_dir: Path, **overrides: str) -> subprocess.CompletedProcess:
    """``manage.py`` in a fresh process: this environment, a private var dir and SQLite
    database, and the variables under test."""
    env = {
        **os.environ,
        "MDMCERTS_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"sqlite:///{var_dir / 'db.sqlite3'}",
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def production(**overrides: str) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "MDMCERTS_KEK": new_kek(),
        "ALLOWED_HOSTS": "certs.example.com",
        "PUBLIC_BASE_URL": "https://certs.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://certs.example.com",
        **overrides,
    }


def test_it_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    result = manage("check", var_dir=tmp_path, **production(SECRET_KEY=""))

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_it_refuses_to_start_without_the_kek_when_debug_is_off(tmp_path):
    result = manage("check", var_dir=tmp_path, **production(MDMCERTS_KEK=""))

    assert result.returncode != 0
    assert "MDMCERTS_KEK must be set when DEBUG is off" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "kek").exists()


def test_production_settings_pass_check_deploy_without_a_warning(tmp_path):
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", var_dir=tmp_path, **production()
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr and "WARNINGS" not in result.stdout


def test_development_secrets_are_generated_once_with_a_warning(tmp_path):
    dev = {"DEBUG": "true", "SECRET_KEY": "", "MDMCERTS_KEK": ""}

    first = manage("check", var_dir=tmp_path, **dev)

    assert first.returncode == 0, first.stderr
    for name in ("SECRET_KEY", "MDMCERTS_KEK"):
        assert f"WARNING: {name} is not set; generated a development value" in first.stderr
    for filename in ("secret_key", "kek"):
        assert stat.S_IMODE((tmp_path / filename).stat().st_mode) == 0o600
    assert len((tmp_path / "secret_key").read_text().strip()) >= 50
    parse_kek((tmp_path / "kek").read_text().strip())
    generated = {f: (tmp_path / f).read_text() for f in ("secret_key", "kek")}

    second = manage("check", var_dir=tmp_path, **dev)

    assert second.returncode == 0, second.stderr
    assert "is not set" not in second.stderr
    assert {f: (tmp_path / f).read_text() for f in generated} == generated


def test_env_example_documents_every_variable_the_settings_read():
    source = (ROOT / "mdmcerts" / "settings.py").read_text()
    read = set(re.findall(r"env\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    documented = set(
        re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )

    assert len(read) >= 20
    assert read - documented == set()


def test_the_configured_broker_carries_a_message():
    queue_name = f"mdmcerts-test-{uuid.uuid4().hex}"
    payload = {"probe": queue_name}

    with celery_app.connection_for_write() as connection:
        queue = connection.SimpleQueue(queue_name)
        try:
            queue.put(payload)
            message = queue.get(timeout=10)
            message.ack()
            assert message.payload == payload
            with pytest.raises(queue.Empty):
                queue.get(block=False)
        finally:
            queue.queue.delete()
            queue.close()
