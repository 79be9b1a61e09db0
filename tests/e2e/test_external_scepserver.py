"""The reference agent gets a certificate from an external SCEP CA, micromdm's scepserver
(``tests/scepserver.py``, static challenge), in delegate mode (it enrolls with scepserver
directly) and in proxy mode (through its /scep-proxy/ URL on the live mdmcerts server).
mdmcerts never sees those certificates issued: it learns each from the agent's next
inventory and links it to the device, the template and the profile; the renewal sweep
then re-triggers the profile and the certificate the agent gets next supersedes it.

Everything runs for real: scepserver, the live server, the agent as ``manage.py agent``
subprocesses, and ``openssl verify`` against scepserver's CA.

Persona: erin's laptop (``tests/e2e/conftest.py``).
"""

import datetime
import secrets

import pytest
import time_machine
from cryptography import x509
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.certificates.services import sweep_renewals
from apps.devices.models import Device, InstalledCertificate
from apps.enrollment.choices import ChallengeType, ExternalDelivery
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.profiles.models import Delivery, Profile, ProfilePayload
from apps.profiles.services import assign
from tests import openssl
from tests import scepserver as scep_ca
from tests.e2e.conftest import enrollment_code, make_group
from tests.factories import force_template
from tests.scepserver import external_ca_for

pytestmark = pytest.mark.django_db(transaction=True)

scepserver, start_scepserver = scep_ca.scepserver, scep_ca.start_scepserver  # fixtures
SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SERIAL = "SN-ERIN-EXT-1"


def set_up(scepserver, mode: str, owner, make_agent):
    """An external CA for scepserver, a template in ``mode``, a profile with its SCEP
    payload and the CA's certificate, and erin's laptop enrolled into its group."""
    ca = external_ca_for(scepserver)
    template = force_template(
        ca=ca,
        subject=SUBJECT,
        sans=[("dns", "$DEVICE_SN$.devices.zylker.com")],
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        external_delivery=mode,
        validity_days=365,
        renew_before_days=30,
    )
    profile = Profile.objects.create(
        name=f"Zylker VPN {secrets.token_hex(3)}",
        identifier=f"com.zylker.vpn.v{secrets.token_hex(4)}",
        platform="any",
    )
    ProfilePayload.objects.create(
        profile=profile, position=0, kind="scep", display_name="VPN identity", template=template
    )
    ProfilePayload.objects.create(
        profile=profile, position=1, kind="trusted_certificate", display_name="CA", ca=ca
    )
    group = make_group()
    assign(profile=profile, group=group)
    agent = make_agent("erin-laptop")
    answer = agent.enroll(enrollment_code(owner, group), name="erin-laptop", serial=SERIAL)
    return agent, Device.objects.get(pk=answer["device_id"]), template, profile


def agent_certificate(agent, profile) -> x509.Certificate:
    (record,) = [
        c for c in agent.state()["profiles"][str(profile.pk)]["certificates"]
        if c["kind"] == "identity"
    ]  # fmt: skip
    path = agent.profile_dir(profile.pk) / record["certificate"]
    return x509.load_pem_x509_certificate(path.read_bytes())


def assert_learned(cert: x509.Certificate, *, device, template, profile, tmp_path) -> Certificate:
    """``cert`` is in mdmcerts' inventory, linked to its device, template and profile, and
    scepserver's CA verifies it."""
    row = Certificate.objects.get(fingerprint_sha256=crypto.fingerprint_sha256(cert))
    assert (row.ca, row.template, row.device, row.profile, row.user) == (
        template.ca,
        template,
        device,
        profile,
        device.owner,
    )
    assert (row.source, row.status, row.serial) == ("scep", "active", crypto.serial_hex(cert))
    assert row.subject == f"O=Zylker,OU=erin,CN={SERIAL}"
    installed = InstalledCertificate.objects.get(device=device, certificate=row)
    assert installed.fingerprint_sha256 == row.fingerprint_sha256
    check = openssl.verify(row.certificate_pem, root_pem=template.ca.certificate_pem, tmp=tmp_path)
    assert check.returncode == 0, check.stderr.decode()
    return row


@pytest.mark.parametrize("mode", [ExternalDelivery.DELEGATE, ExternalDelivery.PROXY])
def test_the_agent_enrolls_with_scepserver_and_mdmcerts_learns_the_certificate(
    scepserver, server, make_agent, erin, mode, tmp_path
):
    agent, device, template, profile = set_up(scepserver, mode, erin, make_agent)

    result = agent.checkin()

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["error"]) == ("installed", "")
    assert result["inventory_sent"] == 2  # the identity and scepserver's CA certificate
    cert = agent_certificate(agent, profile)
    assert cert.issuer == scepserver.ca_certificate.subject
    assert scepserver.issued_count() == 1
    row = assert_learned(cert, device=device, template=template, profile=profile, tmp_path=tmp_path)
    (learned,) = AuditEvent.objects.filter(
        content_type__model="certificate", object_id=str(row.pk), action="create"
    )
    assert learned.message.startswith(
        f"learned from the inventory of device erin-laptop (#{device.pk})"
    )
    relayed = AuditEvent.objects.filter(message__contains="relayed to")
    if mode == ExternalDelivery.PROXY:
        (event,) = relayed
        assert (event.action, event.object_id) == ("issue", str(device.pk))
    else:
        assert not relayed.exists()  # the agent talked to scepserver, not to mdmcerts


def test_a_report_of_the_same_certificate_again_records_it_once(
    scepserver, server, make_agent, erin
):
    agent, device, _, _ = set_up(scepserver, ExternalDelivery.DELEGATE, erin, make_agent)
    agent.checkin()

    again = agent.checkin("--scan")

    assert again["inventory_sent"] == 2
    assert Certificate.objects.filter(device=device).count() == 1
    assert (
        InstalledCertificate.objects.filter(device=device, certificate__isnull=False).count() == 1
    )
    assert AuditEvent.objects.filter(action="create", message__startswith="learned").count() == 1


def test_renewal_re_enrolls_with_scepserver_and_the_new_certificate_supersedes_the_old(
    scepserver, server, make_agent, erin, tmp_path
):
    agent, device, template, profile = set_up(scepserver, ExternalDelivery.PROXY, erin, make_agent)
    agent.checkin()
    first = Certificate.objects.get(device=device)
    inside_window = first.not_after - datetime.timedelta(days=10)

    with time_machine.travel(inside_window, tick=True):
        assert sweep_renewals(timezone.now()) == {"renewals re-triggered": 1}
        renewed = agent.checkin()
        assert [p["action"] for p in renewed["profiles"]] == ["installed"]

    second = assert_learned(
        agent_certificate(agent, profile),
        device=device, template=template, profile=profile, tmp_path=tmp_path,
    )  # fmt: skip
    first.refresh_from_db()
    assert second.pk != first.pk
    assert (second.replaces, first.status) == (first, "superseded")
    assert scepserver.issued_count() == 2


def test_without_the_cas_single_des_switch_the_agent_refuses_its_answer(
    scepserver, server, make_agent, erin
):
    agent, device, template, profile = set_up(
        scepserver, ExternalDelivery.DELEGATE, erin, make_agent
    )
    template.ca.scep_allow_single_des = False
    template.ca.save()

    result = agent.checkin(expect=1)

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["error"]) == ("failed", "SCEP: single DES is not accepted")
    assert Delivery.objects.get(device=device, profile=profile).status == "failed"
    assert not Certificate.objects.exists()
