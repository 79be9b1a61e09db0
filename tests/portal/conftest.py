"""Fixtures for the portal tests.

Personas (portal-specific: they replace the shared ones of ``tests/conftest.py`` here,
because the portal is for end users): alice owns a laptop, certificates issued to her and
to it, and an S/MIME signing upload; bob is another end user with a device and a
certificate of his own; charlie (shared) is signed in and owns nothing; anonymous is not
signed in.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.certificates.choices import IdentityPurpose
from apps.certificates.models import Certificate, Identity
from apps.certificates.services import issue_certificate
from apps.certificates.uploads import store_user_identity
from apps.devices.models import Device
from apps.enrollment.variables import values_for
from tests.factories import force_template, force_user, make_csr
from tests.portal.bundles import P12_PASSWORD, make_p12
from tests.profiles.factories import force_device

ALICE_PASSWORD = "alice-Portal-pass-1"
BOB_PASSWORD = "bob-Portal-pass-1"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Sign-in tests check many passwords: a quick hasher (the algorithm is not under test)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def end_user(username: str, password: str, **fields):
    user = force_user(username, email=f"{username}@zylker.com", **fields)
    user.set_password(password)
    user.save()
    return user


@pytest.fixture
def alice(db):
    return end_user("alice", ALICE_PASSWORD, first_name="Alice", last_name="Adams")


@pytest.fixture
def bob(db):
    return end_user("bob", BOB_PASSWORD, first_name="Bob", last_name="Baker")


@pytest.fixture
def template(db):
    return force_template(subject="O=Zylker,CN=$USERID$")


def issue_to(user, *, template, device: Device | None = None) -> Certificate:
    """A certificate of ``template`` issued to ``user`` (and ``device``)."""
    values = values_for(user=user, device=device)
    return issue_certificate(make_csr(), template, values, user=user, device=device)


@pytest.fixture
def alice_laptop(alice) -> Device:
    return force_device(owner=alice, name="alice-laptop", platform="linux", serial_number="SN-A1")


@pytest.fixture
def alice_certificate(alice, template) -> Certificate:
    return issue_to(alice, template=template)


@pytest.fixture
def alice_device_certificate(alice, alice_laptop, template) -> Certificate:
    return issue_to(alice, template=template, device=alice_laptop)


@pytest.fixture
def alice_upload(alice) -> Identity:
    return store_user_identity(
        user=alice,
        purpose=IdentityPurpose.SMIME_SIGNING,
        data=make_p12(email="alice@zylker.com"),
        password=P12_PASSWORD,
        actor=alice,
    )


@pytest.fixture
def bob_certificate(bob, template) -> Certificate:
    return issue_to(bob, template=template)


def signed_in(user, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(alice) -> Client:
    return signed_in(alice)


@pytest.fixture
def bob_client(bob) -> Client:
    return signed_in(bob)


def p12_file(data: bytes, name: str = "alice.p12") -> SimpleUploadedFile:
    """``data`` as the browser posts a chosen file."""
    return SimpleUploadedFile(name, data, content_type="application/x-pkcs12")
