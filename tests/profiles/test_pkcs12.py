"""PKCS#12 identity payloads: which templates they take, and their delivery at check-in as
a PKCS#12 that the ``openssl`` CLI (an independent client) opens with the delivered
password, whose key matches its certificate and whose certificate verifies against the CA;
in a .mobileconfig that validates against Apple's schema; never in a download.

Persona: dana owns the MacBook and the Linux laptop (``tests/profiles/conftest.py``);
alice administers (``tests/conftest.py``)."""

import base64
import plistlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

import apps.certificates.identities_admin  # noqa: F401 (registers IdentityAdmin)
from apps.audit.models import AuditEvent
from apps.certificates.identities import generate_pending_identities
from apps.certificates.models import Certificate, Identity
from apps.core import secrets
from apps.core.fields import secret_context
from apps.devices import agent
from apps.devices.choices import Platform
from apps.devices.services import issue_device_token
from apps.enrollment.choices import ChallengeType, KeyGeneration
from apps.enrollment.models import CertificateTemplate
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.profiles import delivery
from apps.profiles.choices import PayloadKind, ProfilePlatform, VpnType, WifiSecurity
from apps.profiles.models import Delivery, Profile, ProfileAssignment
from apps.profiles.services import save_profile
from tests.core.test_no_key_in_clear import forms_of
from tests.factories import force_template, make_key, self_signed_ca
from tests.openssl import openssl, verify
from tests.profiles.apple_schema import assert_valid_mobileconfig
from tests.profiles.conftest import SANS, SUBJECT
from tests.profiles.factories import force_device, force_payload, force_profile

pytestmark = pytest.mark.django_db

CHECKIN = "/api/device/v1/checkin"
ACK = "/api/device/v1/ack"


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def server_template(issuing_ca) -> CertificateTemplate:
    """RSA 2048 keys generated on the server; subject and SANs of all four types."""
    return force_template(
        ca=issuing_ca,
        subject=SUBJECT,
        sans=SANS,
        key_algorithm=KeyAlgorithm.RSA_2048,
        key_generation=KeyGeneration.SERVER,
        challenge_type=ChallengeType.NONE,
    )


@pytest.fixture
def laptop(dana):
    """dana's Linux laptop (it gets neutral JSON)."""
    return force_device(
        owner=dana, name="dana-laptop", platform=Platform.LINUX, upn="dana@corp.zylker.com"
    )


def identity_profile(
    template: CertificateTemplate, ca, *, platform: str = ProfilePlatform.ANY
) -> Profile:
    """A PKCS#12 identity, the CA chain, and Wi-Fi and IKEv2 VPN that authenticate with it."""
    profile = force_profile(name="Zylker VPN", identifier="com.zylker.vpn", platform=platform)
    identity = force_payload(
        profile, PayloadKind.PKCS12, display_name="VPN identity", template=template
    )
    force_payload(profile, PayloadKind.TRUSTED_CERTIFICATE, display_name="Zylker CA", ca=ca)
    force_payload(
        profile,
        PayloadKind.WIFI,
        display_name="Corp Wi-Fi",
        ssid="ZylkerCorp",
        wifi_security=WifiSecurity.WPA2_ENTERPRISE,
        identity=identity,
        trusted_server_names="radius.zylker.com",
    )
    force_payload(
        profile,
        PayloadKind.VPN,
        display_name="Zylker VPN",
        vpn_type=VpnType.IKEV2,
        server="vpn.zylker.com",
        account="$USERID$",
        identity=identity,
    )
    return profile


def assigned(profile: Profile, device) -> Profile:
    ProfileAssignment.objects.create(profile=profile, device=device)
    return profile


class Device:
    """A device speaking the device API with its token."""

    def __init__(self, device) -> None:
        self.device = device
        self.client = APIClient(REMOTE_ADDR="192.0.2.40")
        self.client.credentials(HTTP_AUTHORIZATION=f"Device {issue_device_token(device)}")

    def checkin(self) -> list[dict]:
        response = self.client.post(CHECKIN, {}, format="json")
        assert response.status_code == 200, response.content
        return response.json()["install"]

    def ack(self, item: dict, status: str = "installed") -> str:
        body = {"profile_id": item["profile_id"], "version": item["version"], "status": status}
        response = self.client.post(ACK, {**body, "generation": item["generation"]}, format="json")
        assert response.status_code == 200, response.content
        return response.json()["status"]


def pkcs12_of(item: dict) -> dict:
    (payload,) = [p for p in item["profile"]["payloads"] if p["kind"] == "pkcs12"]
    return payload["pkcs12"]


def open_with_openssl(data: bytes, password: str, tmp: Path) -> tuple[str, list[str], str]:
    """The key and certificates ``openssl pkcs12`` reads from ``data`` with ``password``,
    and what ``-info`` says about its encryption."""
    (tmp / "identity.p12").write_bytes(data)
    (tmp / "password").write_text(password)
    args = ["pkcs12", "-in", str(tmp / "identity.p12"), "-passin", f"file:{tmp / 'password'}"]
    opened = openssl(*args, "-nodes")
    assert opened.returncode == 0, opened.stderr
    text = opened.stdout.decode()
    keys = re.findall(r"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n", text, re.S)
    certificates = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", text, re.S
    )
    info = openssl(*args, "-info", "-noout")
    assert info.returncode == 0, info.stderr
    (key,) = keys
    return key, certificates, info.stderr.decode() + info.stdout.decode()


def public_key_of(tmp: Path, pem: str, *, kind: str) -> bytes:
    """The SubjectPublicKeyInfo of a key (``pkey``) or certificate (``x509``), by openssl."""
    (tmp / f"{kind}.pem").write_text(pem)
    if kind == "pkey":
        result = openssl("pkey", "-in", str(tmp / "pkey.pem"), "-pubout")
    else:
        result = openssl("x509", "-in", str(tmp / "x509.pem"), "-pubkey", "-noout")
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_identity_opens(data: bytes, password: str, identity: Identity, root_ca, tmp: Path):
    """openssl opens it with the password, the key is the certificate's, the certificate
    is the identity's and verifies against the root (through its issuers); the rest of what
    openssl read (certificates, encryption info) for more checks."""
    key, certificates, info = open_with_openssl(data, password, tmp)
    leaf = certificates[0]
    assert public_key_of(tmp, key, kind="pkey") == public_key_of(tmp, leaf, kind="x509")
    assert crypto.fingerprint_sha256(crypto.load_pem_certificate(leaf)) == (
        identity.certificate.fingerprint_sha256
    )
    ca = identity.template.ca
    untrusted = "".join(crypto.cert_pem(c) for c in ca.chain()[:-1])
    verified = verify(
        leaf, root_pem=crypto.cert_pem(root_ca.certificate), untrusted_pem=untrusted, tmp=tmp
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return certificates, info


# --- which templates ---------------------------------------------------------------------------


def test_a_pkcs12_payload_needs_a_template_whose_keys_the_server_generates(scep_template):
    profile = force_profile()

    with pytest.raises(ValidationError) as refused:
        force_payload(profile, PayloadKind.PKCS12, template=scep_template)

    assert refused.value.message_dict == {
        "template": [
            f"Template {scep_template} has the device generate its key: use a SCEP payload, "
            "or a template whose key generation location is the server."
        ]
    }
    with pytest.raises(ValidationError, match="Required for PKCS#12 identity payloads"):
        force_payload(profile, PayloadKind.PKCS12)
    assert not profile.payloads.exists()


def test_a_scep_payload_refuses_a_template_whose_keys_the_server_generates(server_template):
    profile = force_profile()

    with pytest.raises(ValidationError) as refused:
        force_payload(profile, PayloadKind.SCEP, template=server_template)

    assert refused.value.message_dict == {
        "template": [
            f"Template {server_template} generates keys on the server: use a PKCS#12 "
            "identity payload, or a template whose key generation location is the device."
        ]
    }


def test_wifi_and_vpn_bind_a_pkcs12_identity_listed_after_them_in_one_edit(server_template):
    profile = force_profile(platform=ProfilePlatform.APPLE)
    identity_uuid = "6f1b6c1e-0000-4000-8000-000000000001"

    save_profile(
        profile=profile,
        before=None,
        payloads=[
            {
                "kind": PayloadKind.WIFI,
                "display_name": "Corp Wi-Fi",
                "ssid": "ZylkerCorp",
                "wifi_security": WifiSecurity.WPA3_ENTERPRISE,
                "identity": identity_uuid,
            },
            {
                "uuid": identity_uuid,
                "kind": PayloadKind.PKCS12,
                "display_name": "Wi-Fi identity",
                "template": server_template,
            },
        ],
    )

    wifi, identity = profile.payloads.order_by("position")
    assert (wifi.identity, identity.kind, str(identity.uuid)) == (
        identity,
        "pkcs12",
        identity_uuid,
    )


# --- delivery -----------------------------------------------------------------------------


def test_check_in_generates_the_identity_on_demand_as_a_pkcs12_the_device_opens(
    laptop, server_template, issuing_ca, root_ca, tmp_path
):
    profile = assigned(identity_profile(server_template, issuing_ca), laptop)
    device = Device(laptop)
    assert not Identity.objects.exists()

    (item,) = device.checkin()

    identity = Identity.objects.get()
    bundle = pkcs12_of(item)
    assert set(bundle) == {
        "data",
        "password",
        "source",
        "file_name",
        "fingerprint_sha256",
        "subject",
        "not_after",
    }
    assert bundle["fingerprint_sha256"] == identity.certificate.fingerprint_sha256
    assert bundle["source"] == "server_generated"
    assert bundle["subject"] == "C=US,O=Zylker,OU=dana,CN=C02ZK1ABMD6T"
    assert bundle["file_name"].endswith(".p12") and len(bundle["password"]) >= 32
    assert (identity.device, identity.template, identity.certificate.profile) == (
        laptop,
        server_template,
        profile,
    )
    assert list(Delivery.objects.get().identities.all()) == [identity]
    data = base64.b64decode(bundle["data"])
    certificates, info = assert_identity_opens(
        data, bundle["password"], identity, root_ca, tmp_path
    )
    # The leaf and its issuers, under PBES2/AES-256-CBC and an HMAC-SHA256 MAC.
    assert len(certificates) == 3
    assert "MAC: sha256" in info
    assert "PBES2, PBKDF2, AES-256-CBC" in info and "PRF hmacWithSHA256" in info
    assert "TripleDES" not in info and "RC2" not in info
    wrong = openssl(
        "pkcs12", "-in", str(tmp_path / "identity.p12"), "-passin", "pass:wrong", "-noout"
    )
    assert wrong.returncode != 0
    # The other payloads name it as their identity.
    names = {p["kind"]: p for p in item["profile"]["payloads"]}
    identity_uuid = names["pkcs12"]["uuid"]
    assert names["wifi"]["wifi"]["identity_payload_uuid"] == identity_uuid
    assert names["vpn"]["vpn"]["identity_payload_uuid"] == identity_uuid


def test_the_install_acknowledgement_marks_the_identity_delivered(
    laptop, server_template, issuing_ca
):
    assigned(identity_profile(server_template, issuing_ca), laptop)
    device = Device(laptop)
    (item,) = device.checkin()
    identity = Identity.objects.get()
    assert identity.delivered_at is None

    assert device.ack(item, "failed") == "failed"
    identity.refresh_from_db()
    assert identity.delivered_at is None

    assert device.ack(item) == "installed"
    identity.refresh_from_db()
    assert identity.delivered_at == Delivery.objects.get().acknowledged_at


def test_an_identity_generated_early_is_the_one_delivered(laptop, server_template, issuing_ca):
    assigned(identity_profile(server_template, issuing_ca), laptop)
    assert generate_pending_identities() == 1
    early = Identity.objects.get()

    (item,) = Device(laptop).checkin()

    assert pkcs12_of(item)["fingerprint_sha256"] == early.certificate.fingerprint_sha256
    assert Certificate.objects.count() == 1


def test_each_delivery_has_its_own_password_for_the_same_identity(
    laptop, server_template, issuing_ca
):
    profile = assigned(identity_profile(server_template, issuing_ca), laptop)
    device = Device(laptop)
    (first,) = device.checkin()

    delivery.redeliver(laptop, profile=profile)
    (second,) = device.checkin()

    one, two = pkcs12_of(first), pkcs12_of(second)
    assert one["fingerprint_sha256"] == two["fingerprint_sha256"]
    assert one["password"] != two["password"] and one["data"] != two["data"]
    key, cert, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(two["data"]), two["password"].encode()
    )
    assert crypto.public_key_matches(key, cert)
    assert Identity.objects.count() == 1 and second["generation"] == 2


def test_an_apple_device_gets_a_pkcs12_payload_that_apples_schema_accepts(
    device, server_template, issuing_ca, root_ca, tmp_path
):
    profile = assigned(
        identity_profile(server_template, issuing_ca, platform=ProfilePlatform.APPLE), device
    )

    (item,) = Device(device).checkin()

    assert item["format"] == "mobileconfig"
    document = assert_valid_mobileconfig(base64.b64decode(item["mobileconfig"]))
    by_type = {}
    for payload in document["PayloadContent"]:
        by_type.setdefault(payload["PayloadType"], []).append(payload)
    (p12,) = by_type["com.apple.security.pkcs12"]
    identity_payload = profile.payloads.get(kind=PayloadKind.PKCS12)
    assert p12["PayloadUUID"] == str(identity_payload.uuid).upper()
    assert set(p12) - {"PayloadContent", "Password", "PayloadCertificateFileName"} == {
        "PayloadType",
        "PayloadVersion",
        "PayloadIdentifier",
        "PayloadUUID",
        "PayloadDisplayName",
        "PayloadOrganization",
    }
    (wifi,) = by_type["com.apple.wifi.managed"]
    (vpn,) = by_type["com.apple.vpn.managed"]
    assert wifi["PayloadCertificateUUID"] == p12["PayloadUUID"]
    assert vpn["IKEv2"]["PayloadCertificateUUID"] == p12["PayloadUUID"]
    identity = Identity.objects.get()
    certificates, info = assert_identity_opens(
        p12["PayloadContent"], p12["Password"], identity, root_ca, tmp_path
    )
    # One certificate (the schema's rule), in the encryption every Apple OS imports.
    assert len(certificates) == 1
    assert "MAC: sha1" in info
    assert info.count("pbeWithSHA1And3-KeyTripleDES-CBC") == 2  # certificates and key
    assert plistlib.loads(base64.b64decode(item["mobileconfig"]))["PayloadIdentifier"] == (
        "com.zylker.vpn"
    )


def test_a_device_that_cannot_get_an_identity_gets_a_failed_delivery_and_no_key(
    dana, server_template, issuing_ca
):
    no_serial = force_device(
        owner=dana, serial_number="", platform=Platform.LINUX, upn="dana@corp.zylker.com"
    )
    assigned(identity_profile(server_template, issuing_ca), no_serial)

    assert Device(no_serial).checkin() == []

    row = Delivery.objects.get()
    assert row.status == "failed"
    assert "PKCS#12 payload 'VPN identity'" in row.error and "$DEVICE_SN$" in row.error
    assert not Identity.objects.exists() and not Certificate.objects.exists()
    assert not row.identities.exists()


def test_a_profile_that_fails_after_generation_keeps_no_identity(
    laptop, server_template, issuing_ca
):
    profile = identity_profile(server_template, issuing_ca)
    vpn = profile.payloads.get(kind=PayloadKind.VPN)
    vpn.account = "$USER_CUSTOM4$"  # no value for dana: rendering fails after the identity
    vpn.save()
    assigned(profile, laptop)

    assert Device(laptop).checkin() == []

    assert "$USER_CUSTOM4$" in Delivery.objects.get().error
    assert not Identity.objects.exists() and not Certificate.objects.exists()
    assert not AuditEvent.objects.filter(action="issue").exists()


# --- never out of the device's response ----------------------------------------------------


def test_the_console_never_hands_out_a_pkcs12_identity(
    client, alice, device, server_template, issuing_ca
):
    profile = identity_profile(server_template, issuing_ca, platform=ProfilePlatform.APPLE)
    assigned(profile, device)
    generate_pending_identities()
    identity = Identity.objects.get()
    Device(device).checkin()  # a delivery that carried it
    der = secrets.decrypt(identity.private_key, context=secret_context(Identity, "private_key"))
    client.force_login(alice)

    download = client.post(
        f"/admin/profiles/profile/{profile.pk}/mobileconfig/", {"device": str(device.pk)}
    )
    pages = [
        client.get(url)
        for url in (
            "/admin/certificates/identity/",
            f"/admin/certificates/identity/{identity.pk}/change/",
            f"/admin/certificates/identity/{identity.pk}/history/",
            f"/admin/certificates/certificate/{identity.certificate_id}/change/",
            f"/admin/profiles/delivery/{Delivery.objects.get().pk}/change/",
        )
    ]

    assert download.status_code == 200 and download["Content-Type"].startswith("text/html")
    assert "delivered to its device at check-in only" in download.content.decode()
    assert not AuditEvent.objects.filter(action="download").exists()
    assert [page.status_code for page in pages] == [200] * 5
    blob = b"".join(page.content for page in pages) + download.content
    assert b"private_key" not in blob and b"mdmc1:" not in blob
    for form in forms_of(der):
        assert form not in blob
    assert identity.certificate.subject.encode() in pages[0].content
    # Read-only: no add, change or delete.
    assert client.post(f"/admin/certificates/identity/{identity.pk}/delete/").status_code == 403
    assert client.get("/admin/certificates/identity/add/").status_code == 403
    assert Identity.objects.get() == identity


# --- the reference agent's side -------------------------------------------------------------


def agent_payload(data: bytes, password: str, fingerprint: str = "") -> dict:
    body = {"data": base64.b64encode(data).decode(), "password": password}
    return {
        "uuid": "6f1b6c1e-0000-4000-8000-000000000002",
        "kind": "pkcs12",
        "pkcs12": {**body, "fingerprint_sha256": fingerprint},
    }


def test_the_agent_stores_the_key_0600_and_the_chain_beside_the_certificate(tmp_path):
    key, issuer_key = make_key(), make_key()
    certificate, issuer = self_signed_ca(key, ca=False), self_signed_ca(issuer_key)
    data = pkcs12.serialize_key_and_certificates(
        b"x", key, certificate, [issuer], BestAvailableEncryption(b"pw")
    )

    record = agent.install_pkcs12(
        agent_payload(data, "pw", crypto.fingerprint_sha256(certificate)), tmp_path
    )

    stem = "6f1b6c1e-0000-4000-8000-000000000002"
    assert (record.kind, record.key, record.certificate) == (
        "identity",
        f"{stem}.key.pem",
        f"{stem}.cert.pem",
    )
    assert oct((tmp_path / record.key).stat().st_mode & 0o777) == "0o600"
    stored = load_pem_private_key((tmp_path / record.key).read_bytes(), password=None)
    assert crypto.public_key_matches(stored, certificate)
    assert (tmp_path / f"{stem}.chain.pem").read_bytes() == crypto.cert_pem(issuer).encode()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong password", "does not open with the password given"),
        ("not base64", "does not open with the password given"),
        ("no identity", "holds no key and certificate"),
        ("another certificate", "not the one the profile names"),
    ],
)
def test_the_agent_refuses_a_pkcs12_it_cannot_trust(tmp_path, case, error):
    key = make_key()
    certificate = self_signed_ca(key, ca=False)
    data = pkcs12.serialize_key_and_certificates(
        b"x",
        None if case == "no identity" else key,
        certificate,
        None,
        BestAvailableEncryption(b"pw"),
    )
    payload = agent_payload(
        data,
        "nope" if case == "wrong password" else "pw",
        "ab" * 32 if case == "another certificate" else crypto.fingerprint_sha256(certificate),
    )
    if case == "not base64":
        payload["pkcs12"]["data"] = "%%%"

    with pytest.raises(agent.ProfileError, match=error):
        agent.install_pkcs12(payload, tmp_path)
    assert list(tmp_path.iterdir()) == []
