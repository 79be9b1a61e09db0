"""Two reference agents enroll into a group whose Wi-Fi profile carries a SCEP payload on a
template with dynamic challenges; each enrolls over SCEP with its own challenge and gets
a certificate with its own device's and owner's values, linked to its device, owner and
profile, and reported installed by its inventory.

Everything runs for real: the live server, the agents as ``manage.py agent`` subprocesses
(with a database URL that points nowhere) and ``openssl verify``.
"""

import stat

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from apps.certificates.models import Certificate
from apps.devices.models import Device, InstalledCertificate
from apps.enrollment.models import Challenge
from apps.pki import crypto
from apps.profiles.models import Delivery
from tests import openssl
from tests.e2e.conftest import (
    enrollment_code,
    make_ca,
    make_dynamic_template,
    make_group,
    make_wifi_profile,
)

pytestmark = pytest.mark.django_db(transaction=True)

UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
LAPTOPS = {"erin": ("erin-laptop", "SN-ERIN-0001"), "frank": ("frank-laptop", "SN-FRANK-0002")}


@pytest.fixture
def wifi(server, erin, frank):
    """CA, dynamic template, group with the Wi-Fi profile, and a one-time code per owner."""
    ca = make_ca()
    template = make_dynamic_template(ca)
    group = make_group()
    profile = make_wifi_profile(template=template, ca=ca, group=group)
    codes = {user.username: enrollment_code(user, group) for user in (erin, frank)}
    return {"ca": ca, "template": template, "group": group, "profile": profile, "codes": codes}


@pytest.fixture
def enrolled(wifi, make_agent, erin, frank):
    """Both laptops enrolled and checked in once: ``{username: (agent, device, result)}``."""
    laptops = {}
    for user in (erin, frank):
        name, serial = LAPTOPS[user.username]
        agent = make_agent(name)
        answer = agent.enroll(wifi["codes"][user.username], name=name, serial=serial)
        result = agent.checkin()
        laptops[user.username] = (agent, Device.objects.get(pk=answer["device_id"]), result)
    return laptops


def sans_of(cert: x509.Certificate) -> dict[str, list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        "rfc822": names.get_values_for_type(x509.RFC822Name),
        "dns": names.get_values_for_type(x509.DNSName),
        "upn": [
            core.UTF8String.load(other.value).native
            for other in names.get_values_for_type(x509.OtherName)
            if other.type_id == UPN
        ],
    }


def test_each_agent_is_a_device_of_its_owner_in_the_group(enrolled, wifi, erin, frank):
    for user in (erin, frank):
        _, device, _ = enrolled[user.username]
        name, serial = LAPTOPS[user.username]

        assert (device.name, device.platform, device.serial_number) == (name, "linux", serial)
        assert (device.owner, device.status) == (user, "enrolled")
        assert list(device.groups.all()) == [wifi["group"]]
        assert device.last_checkin_at is not None


def test_each_agent_installs_the_profile_and_reports_it(enrolled, wifi):
    profile = wifi["profile"]
    for _, device, result in enrolled.values():
        (outcome,) = result["profiles"]

        assert result["exit_code"] == 0
        assert (outcome["action"], outcome["profile_id"], outcome["error"]) == (
            "installed",
            profile.pk,
            "",
        )
        assert (outcome["version"], outcome["generation"]) == (profile.version, 1)
        assert [c["kind"] for c in outcome["certificates"]] == ["identity", "trusted"]
        delivery = Delivery.objects.get(device=device, profile=profile)
        assert (delivery.status, delivery.error) == ("installed", "")
        assert (delivery.delivered_version, delivery.delivered_generation) == (profile.version, 1)


def test_each_enrolls_with_its_own_dynamic_challenge(enrolled, wifi):
    used = []
    for _, device, _ in enrolled.values():
        (challenge,) = Challenge.objects.filter(device=device)

        assert challenge.used_at is not None
        assert (challenge.template, challenge.profile) == (wifi["template"], wifi["profile"])
        assert challenge.user == device.owner
        used.append(challenge.pk)

    assert len(set(used)) == 2
    assert Challenge.objects.count() == 2


def test_each_certificate_carries_its_own_device_and_owner(enrolled, wifi, erin, frank):
    for user in (erin, frank):
        agent, _, result = enrolled[user.username]
        identity = result["profiles"][0]["certificates"][0]
        directory = agent.profile_dir(wifi["profile"].pk)
        cert = x509.load_pem_x509_certificate((directory / identity["certificate"]).read_bytes())
        serial = LAPTOPS[user.username][1]

        assert [(a.oid, a.value) for a in cert.subject] == [
            (NameOID.ORGANIZATION_NAME, "Zylker"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, user.username),
            (NameOID.COMMON_NAME, serial),
        ]
        assert sans_of(cert) == {
            "rfc822": [user.email],
            "dns": [f"{serial}.devices.zylker.com"],
            "upn": [user.attributes.upn],
        }
        assert identity["fingerprint_sha256"] == crypto.fingerprint_sha256(cert)


def test_each_certificate_is_linked_to_its_device_owner_and_profile(enrolled, wifi):
    for _, device, result in enrolled.values():
        identity = result["profiles"][0]["certificates"][0]

        row = Certificate.objects.get(device=device)

        assert row.fingerprint_sha256 == identity["fingerprint_sha256"]
        assert (row.user, row.profile, row.template) == (
            device.owner,
            wifi["profile"],
            wifi["template"],
        )
        assert (row.source, row.status) == ("scep", "active")
    assert Certificate.objects.count() == 2


def test_each_key_stays_private_on_its_device_and_matches_its_certificate(enrolled, wifi):
    for agent, _, result in enrolled.values():
        identity = result["profiles"][0]["certificates"][0]
        directory = agent.profile_dir(wifi["profile"].pk)
        key_path = directory / identity["key"]
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((directory / identity["certificate"]).read_bytes())

        assert cert.public_key() == key.public_key()
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
        assert "challenge" not in (directory / "profile.json").read_text().replace(
            '"challenge": ""', ""
        )


def test_each_certificate_verifies_against_the_ca(enrolled, wifi, tmp_path):
    ca_pem = crypto.cert_pem(wifi["ca"].certificate)
    for username, (_, device, _) in enrolled.items():
        row = Certificate.objects.get(device=device)
        workdir = tmp_path / f"verify-{username}"
        workdir.mkdir()

        verified = openssl.verify(row.certificate_pem, root_pem=ca_pem, tmp=workdir)

        assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_the_trusted_chain_is_installed_beside_the_identity(enrolled, wifi):
    for agent, _, result in enrolled.values():
        trusted = result["profiles"][0]["certificates"][1]
        path = agent.profile_dir(wifi["profile"].pk) / trusted["certificate"]

        assert x509.load_pem_x509_certificate(path.read_bytes()) == wifi["ca"].certificate


def test_the_inventory_after_installing_shows_the_certificates_installed(enrolled, wifi):
    ca_fingerprint = wifi["ca"].fingerprint_sha256
    for _, device, result in enrolled.values():
        row = Certificate.objects.get(device=device)

        assert (result["rounds"], result["inventory_sent"]) == (2, 2)
        installed = {
            i.fingerprint_sha256: i.certificate_id
            for i in InstalledCertificate.objects.filter(device=device)
        }
        assert installed == {row.fingerprint_sha256: row.pk, ca_fingerprint: None}


def test_a_scan_checkin_reports_them_installed_and_changes_nothing_else(enrolled, wifi):
    for agent, device, _ in enrolled.values():
        row = Certificate.objects.get(device=device)
        before = InstalledCertificate.objects.get(device=device, certificate=row).last_seen_at

        result = agent.checkin("--scan")

        assert (result["exit_code"], result["profiles"], result["inventory_sent"]) == (0, [], 2)
        installed = InstalledCertificate.objects.get(device=device, certificate=row)
        assert installed.last_seen_at > before
        assert installed.subject == row.subject
        device.refresh_from_db()
        assert device.last_inventory_at is not None
        assert Delivery.objects.get(device=device).status == "installed"
    assert Certificate.objects.count() == 2
    assert Challenge.objects.count() == 2


def test_no_device_reports_the_other_devices_certificate(enrolled):
    erin_device, frank_device = enrolled["erin"][1], enrolled["frank"][1]

    erin_certificates = set(
        InstalledCertificate.objects.filter(
            device=erin_device, certificate__isnull=False
        ).values_list("certificate__device", flat=True)
    )
    frank_certificates = set(
        InstalledCertificate.objects.filter(
            device=frank_device, certificate__isnull=False
        ).values_list("certificate__device", flat=True)
    )
    assert (erin_certificates, frank_certificates) == ({erin_device.pk}, {frank_device.pk})
