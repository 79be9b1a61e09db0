"""End-to-end fixtures: a live mdmcerts server, reference agents run as real subprocesses
against it, and the objects an administrator sets up (CA, template, Wi-Fi profile, group,
enrollment codes).

Personas: erin and frank each own a laptop that enrolls (alice, bob and charlie are in
``tests/conftest.py``, dana in ``tests/scep/conftest.py``)."""

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.cache import cache

from apps.devices.models import DeviceGroup, UserAttributes
from apps.devices.services import create_enrollment_code
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ra
from apps.profiles.models import Profile, ProfilePayload
from apps.profiles.services import assign
from tests.factories import force_ca, force_template, force_user

ROOT = Path(__file__).resolve().parents[2]
AGENT_TIMEOUT = 180
# The agent must never reach a database: its subprocesses get one that does not exist.
NOWHERE_DATABASE = "postgres://the-agent-has-no-database@127.0.0.1:9/nowhere"
SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SANS = [
    ("rfc822", "$EMAIL$"),
    ("dns", "$DEVICE_SN$.devices.zylker.com"),
    ("upn", "$USER_UPN$"),
]


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_TEST_NAME",)}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    return {**env, "DATABASE_URL": NOWHERE_DATABASE, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


@dataclass
class Agent:
    """``manage.py agent`` with its own state directory, run in a subprocess."""

    server: str
    state_dir: Path

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "manage.py",
            "agent",
            "--server",
            self.server,
            "--state-dir",
            str(self.state_dir),
            "--json",
            *args,
        ]

    def run(self, *args: str, expect: int = 0) -> dict:
        """Run one agent command; its JSON result (exit status ``expect``)."""
        result = subprocess.run(
            self.command(*args),
            cwd=ROOT,
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=AGENT_TIMEOUT,
            check=False,
        )
        assert result.returncode == expect, (
            f"agent {' '.join(args)} exited {result.returncode}, not {expect}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
        return json.loads(result.stdout)

    def enroll(self, code: str, *, name: str, serial: str, platform: str = "linux") -> dict:
        # "--code=": a generated code may start with "-", which is no option.
        return self.run(
            "enroll", f"--code={code}", f"--name={name}", f"--platform={platform}",
            f"--serial={serial}",
        )  # fmt: skip

    def checkin(self, *args: str, expect: int = 0) -> dict:
        return self.run("checkin", *args, expect=expect)

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def profile_dir(self, profile_id: int) -> Path:
        return self.state_dir / "profiles" / str(profile_id)


@pytest.fixture
def server(live_server, transactional_db, settings) -> str:
    """The live server's URL, which is also the URL its profiles name (PUBLIC_BASE_URL)."""
    settings.PUBLIC_BASE_URL = live_server.url
    cache.clear()  # the enrollment throttle counts per address in the local-memory cache
    return live_server.url


@pytest.fixture
def make_agent(server, tmp_path) -> Callable[[str], Agent]:
    """``make_agent(name)``: an agent of the live server with a fresh state directory."""

    def make(name: str) -> Agent:
        return Agent(server=server, state_dir=tmp_path / name)

    return make


@pytest.fixture
def erin(transactional_db):
    user = force_user("erin", first_name="Erin", last_name="Hale", email="erin@zylker.com")
    UserAttributes.objects.create(user=user, upn="erin@corp.zylker.com")
    return user


@pytest.fixture
def frank(transactional_db):
    user = force_user("frank", first_name="Frank", last_name="Ives", email="frank@zylker.com")
    UserAttributes.objects.create(user=user, upn="frank@corp.zylker.com")
    return user


def make_ca(key_algorithm: str = KeyAlgorithm.EC_P256) -> CertificateAuthority:
    return ensure_ra(force_ca(key_algorithm=key_algorithm))


def make_dynamic_template(ca: CertificateAuthority, **fields) -> CertificateTemplate:
    """A template with dynamic challenges whose certificates name the device and owner."""
    fields.setdefault("key_algorithm", KeyAlgorithm.RSA_2048)
    return force_template(
        ca=ca, challenge_type=ChallengeType.DYNAMIC, subject=SUBJECT, sans=SANS, **fields
    )


def make_wifi_profile(
    *, template: CertificateTemplate, ca: CertificateAuthority, group: DeviceGroup
) -> Profile:
    """A Wi-Fi profile (SCEP identity, the CA's chain, EAP-TLS) assigned to ``group``."""
    profile = Profile.objects.create(
        name=f"Zylker Wi-Fi {secrets.token_hex(3)}",
        identifier=f"com.zylker.wifi.w{secrets.token_hex(4)}",
        platform="any",
    )
    scep = ProfilePayload.objects.create(
        profile=profile, position=0, kind="scep", display_name="Wi-Fi identity", template=template
    )
    ProfilePayload.objects.create(
        profile=profile, position=1, kind="trusted_certificate", display_name="Zylker CA", ca=ca
    )
    ProfilePayload.objects.create(
        profile=profile,
        position=2,
        kind="wifi",
        display_name="ZylkerCorp",
        ssid="ZylkerCorp",
        wifi_security="wpa2_enterprise",
        identity=scep,
        trusted_server_names="radius.zylker.com",
    )
    assign(profile=profile, group=group)
    profile.refresh_from_db()
    return profile


def make_group() -> DeviceGroup:
    return DeviceGroup.objects.create(name=f"Wi-Fi laptops {secrets.token_hex(3)}")


def enrollment_code(owner, group: DeviceGroup) -> str:
    """A one-time code that enrolls a device of ``owner`` into ``group``."""
    return create_enrollment_code(name=f"{owner} laptop", owner=owner, group=group)[1]
