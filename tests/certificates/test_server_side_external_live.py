"""Server-side delivery from an external SCEP CA with a live mdmcerts server.

- The reference agent (a real subprocess) receives the PKCS#12 whose certificate
  micromdm's ``scepserver`` (the external CA, static challenge) issued to mdmcerts.
- PENDING: scepserver never answers PENDING, so mdmcerts' own SCEP endpoint, a real
  RFC 8894 server, plays the external CA with an approval-required template: the
  enrollment is polled (CertPoll) with the same transaction until approved, and the
  CA side sees one request only.

Persona: erin owns the laptop (``tests/e2e/conftest.py``)."""

import pytest
from cryptography import x509

from apps.certificates import identities
from apps.certificates.identities import generate_pending_identities
from apps.certificates.models import CertificateRequest, Identity
from apps.certificates.services import approve_request
from apps.devices.models import Device, InstalledCertificate
from apps.enrollment.choices import ChallengeType, ExternalDelivery, KeyGeneration
from apps.enrollment.models import ExternalEnrollment
from apps.pki import crypto, external
from apps.pki.backends import scep as upstream
from apps.pki.choices import ExternalChallengeType, KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.models import Delivery
from apps.profiles.services import assign
from apps.scep.protocol import client
from tests import openssl
from tests import scepserver as scepserver_fixtures
from tests.e2e import conftest as e2e
from tests.e2e.conftest import SANS, SUBJECT, enrollment_code, make_ca, make_group
from tests.factories import force_template, random_name
from tests.profiles.test_pkcs12_agent import vpn_profile
from tests.scepserver import external_ca_for

# The scepserver fixtures of tests/scepserver.py.
scepserver, start_scepserver = scepserver_fixtures.scepserver, scepserver_fixtures.start_scepserver
pytestmark = pytest.mark.django_db(transaction=True)
server, make_agent, erin = e2e.server, e2e.make_agent, e2e.erin


def server_side_template(ca, **fields):
    return force_template(
        ca=ca,
        key_generation=KeyGeneration.SERVER,
        external_delivery=ExternalDelivery.SERVER_SIDE,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        subject=SUBJECT,
        sans=SANS,
        **fields,
    )


def test_the_agent_installs_an_identity_the_external_ca_issued_to_mdmcerts(
    server, make_agent, erin, eager_celery, scepserver, tmp_path
):
    ca = external_ca_for(scepserver)
    template = server_side_template(ca)
    group = make_group()
    agent = make_agent("erin-laptop")
    answer = agent.enroll(enrollment_code(erin, group), name="erin-laptop", serial="SN-ERIN-1")
    device = Device.objects.get(pk=answer["device_id"])
    profile = vpn_profile(ca, template)

    assign(profile=profile, group=group)  # the generation task enrolls with scepserver
    result = agent.checkin()

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["profile_id"]) == ("installed", profile.pk)
    stem = str(profile.payloads.get(kind="pkcs12").uuid)
    cert_file = agent.profile_dir(profile.pk) / f"{stem}.cert.pem"
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    check = openssl.verify(
        cert_file.read_text(), root_pem=scepserver.ca_pem_path.read_text(), tmp=tmp_path
    )
    assert check.returncode == 0, check.stderr
    identity = Identity.objects.select_related("certificate").get(device=device)
    assert crypto.fingerprint_sha256(certificate) == identity.certificate.fingerprint_sha256
    assert certificate.subject.rfc4514_string() == "CN=SN-ERIN-1,OU=erin,O=Zylker"
    assert (identity.certificate.ca, identity.certificate.device) == (ca, device)
    assert Delivery.objects.get(device=device).status == "installed"
    installed = InstalledCertificate.objects.get(device=device, certificate=identity.certificate)
    assert installed.fingerprint_sha256 == identity.certificate.fingerprint_sha256
    assert scepserver.issued_count() == 1


def mdmcerts_as_external_ca(server: str) -> tuple[CertificateAuthority, object]:
    """An external CA server pointing at this live server's own SCEP endpoint, whose
    template takes subject and SANs from the request and holds it for approval."""
    local = make_ca()
    held = force_template(
        ca=local,
        challenge_type=ChallengeType.STATIC,
        static_challenge="approve-me",
        subject="O=Zylker,CN=upstream",
        subject_source="request",
        allowed_request_san_types=["rfc822", "dns", "upn"],
        key_algorithm=KeyAlgorithm.RSA_2048,
        approval_required=True,
    )
    name = random_name("upstream")
    ca = CertificateAuthority(
        name=name,
        slug=name,
        scep_url=f"{server}/scep/{held.slug}/pkiclient.exe",
        scep_challenge_type=ExternalChallengeType.STATIC,
        scep_max_pending_retries=0,
        scep_request_timeout_seconds=10,
    )
    ca.set_secret("scep_static_challenge", "approve-me")
    external.fetch_and_pin(ca)
    return external.save_external_ca(ca, before=None), local


def test_a_pending_enrollment_is_polled_with_the_same_transaction_until_approved(server, erin):
    ca, local = mdmcerts_as_external_ca(server)
    # GetCACert returns the RA and the CA: the CA is pinned.
    assert ca.fingerprint_sha256 == local.fingerprint_sha256
    template = server_side_template(ca)
    group = make_group()
    device = Device.objects.create(owner=erin, name="laptop", serial_number="SN-ERIN-7")
    group.devices.add(device)
    assign(profile=vpn_profile(ca, template), group=group)

    assert generate_pending_identities() == 0  # PENDING at the CA
    enrollment = ExternalEnrollment.objects.get(device=device)
    assert enrollment.pending_since is not None
    held = CertificateRequest.objects.get()
    assert (held.status, held.transaction_id) == ("pending", enrollment.transaction_id)

    assert generate_pending_identities() == 0  # CertPoll: still PENDING, no new request
    assert CertificateRequest.objects.count() == 1

    # Approved at the CA: the stored key and transaction get the certificate. (Recording
    # it is not done here: mdmcerts playing both sides already holds it in its inventory.)
    approve_request(certificate_request=held)
    enrollment.refresh_from_db()
    pending = resumable(enrollment)
    issued = upstream.upstream_for(ca).poll(pending)

    assert issued.public_key() == pending.key.public_key()
    assert issued.issuer == local.certificate.subject
    assert CertificateRequest.objects.count() == 1
    assert CertificateRequest.objects.get().certificate.fingerprint_sha256 == (
        crypto.fingerprint_sha256(issued)
    )


def resumable(enrollment: ExternalEnrollment) -> upstream.PendingRequest:
    key = identities._load_enrollment_key(enrollment)
    csr = x509.load_der_x509_csr(bytes(enrollment.csr_der))
    return upstream.PendingRequest(key, csr, enrollment.transaction_id)


def test_pending_answers_are_polled_within_the_configured_retries(server, monkeypatch):
    ca, _ = mdmcerts_as_external_ca(server)
    ca.scep_max_pending_retries, ca.scep_retry_seconds = 3, 7
    ca.save()
    key = crypto.generate_private_key(KeyAlgorithm.RSA_2048)
    subject = x509.Name.from_rfc4514_string("CN=SN-ERIN-8,O=Zylker")
    csr = client.certificate_request(key=key, subject=subject, challenge_password="approve-me")
    pending = upstream.PendingRequest(key, csr, client.transaction_id_for(key.public_key()))
    waits = []

    def approve_while_waiting(seconds):
        # The time between two polls passes instantly; the CA's admin approves meanwhile.
        waits.append(seconds)
        if len(waits) == 2:
            approve_request(certificate_request=CertificateRequest.objects.get())

    monkeypatch.setattr(upstream, "wait", approve_while_waiting)

    issued = upstream.upstream_for(ca).enroll(pending)

    assert waits == [7, 7]
    assert issued.public_key() == key.public_key()
    assert issued.subject == subject
    assert CertificateRequest.objects.get().transaction_id == pending.transaction_id


def test_a_request_still_pending_after_the_retries_is_left_for_the_next_sweep(server, monkeypatch):
    ca, _ = mdmcerts_as_external_ca(server)
    ca.scep_max_pending_retries = 2
    ca.save()
    key = crypto.generate_private_key(KeyAlgorithm.RSA_2048)
    subject = x509.Name.from_rfc4514_string("CN=SN-ERIN-9,O=Zylker")
    csr = client.certificate_request(key=key, subject=subject, challenge_password="approve-me")
    pending = upstream.PendingRequest(key, csr, client.transaction_id_for(key.public_key()))
    waits = []
    monkeypatch.setattr(upstream, "wait", waits.append)

    assert upstream.upstream_for(ca).enroll(pending) is None

    assert waits == [10, 10]
    assert CertificateRequest.objects.get().status == "pending"
