"""Server-side delivery from an external SCEP CA: mdmcerts generates the key, enrolls with
micromdm's ``scepserver`` (started by the test as the external CA, static challenge) and
keeps the identity like one its own CA signed. PENDING and the agent's side are in
``test_server_side_external_live``.

Personas: dana owns the laptops of the "Zylker laptops" group (``test_identities``)."""

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.certificates.identities import (
    IdentityNotIssued,
    current_identity,
    generate_pending_identities,
    renew_identity,
)
from apps.certificates.models import Certificate, Identity
from apps.enrollment.choices import ChallengeType, ExternalDelivery, KeyGeneration
from apps.enrollment.models import ExternalEnrollment
from apps.pki import crypto
from apps.pki.backends import IssuanceError, backend_for
from apps.pki.choices import KeyAlgorithm
from apps.profiles.services import assign
from apps.scep.protocol import client
from tests import openssl
from tests import scepserver as scepserver_fixtures
from tests.certificates import test_identities
from tests.certificates.test_identities import SANS, SUBJECT, pkcs12_profile, stored_key
from tests.factories import force_template
from tests.scepserver import external_ca_for
from tests.subprocesses import free_port

# The scepserver fixtures of tests/scepserver.py.
scepserver, start_scepserver = scepserver_fixtures.scepserver, scepserver_fixtures.start_scepserver
group = test_identities.group  # dana (tests/conftest.py) owns its laptops
pytestmark = pytest.mark.django_db


def server_side_template(ca, **fields):
    fields.setdefault("key_algorithm", KeyAlgorithm.RSA_2048)
    fields.setdefault("key_generation", KeyGeneration.SERVER)
    fields.setdefault("external_delivery", ExternalDelivery.SERVER_SIDE)
    return force_template(
        ca=ca,
        challenge_type=ChallengeType.NONE,
        subject=SUBJECT,
        sans=SANS,
        **fields,
    )


def test_the_generation_sweep_enrolls_each_device_with_the_external_ca(scepserver, group, tmp_path):
    ca = external_ca_for(scepserver)
    template = server_side_template(ca)
    assign(profile=pkcs12_profile(template), group=group)

    assert generate_pending_identities() == 2

    for device in group.devices.all():
        identity = Identity.objects.select_related("certificate").get(device=device)
        issued = identity.certificate
        assert (issued.ca, issued.source, issued.device) == (ca, "server_generated", device)
        assert issued.subject == f"O=Zylker,OU=dana,CN={device.serial_number}"
        assert issued.certificate.issuer == scepserver.ca_certificate.subject
        check = openssl.verify(
            issued.certificate_pem, root_pem=scepserver.ca_pem_path.read_text(), tmp=tmp_path
        )
        assert check.returncode == 0, check.stderr
    assert scepserver.issued_count() == 2
    assert not ExternalEnrollment.objects.exists()


def test_a_wrong_static_challenge_is_a_clear_failure_and_no_certificate(scepserver, group):
    ca = external_ca_for(scepserver, static_challenge="not-the-secret")
    template = server_side_template(ca)
    assign(profile=pkcs12_profile(template), group=group)

    assert generate_pending_identities() == 0

    assert not Certificate.objects.exists() and not Identity.objects.exists()
    assert scepserver.issued_count() == 0
    assert not ExternalEnrollment.objects.exists()  # a FAILURE ends the enrollment
    refusals = AuditEvent.objects.filter(action="issue_failed", object_id=str(template.pk))
    assert refusals.count() == 2
    assert f"CA server {ca.name} refused the request" in refusals.first().message


def test_a_ca_that_is_down_leaves_the_enrollment_for_the_next_sweep(scepserver, group):
    ca = external_ca_for(scepserver)
    ca.scep_url = f"http://127.0.0.1:{free_port()}/scep"
    ca.save()
    template = server_side_template(ca)
    assign(profile=pkcs12_profile(template), group=group)

    assert generate_pending_identities() == 0

    assert not Certificate.objects.exists()
    enrollments = ExternalEnrollment.objects.order_by("device__serial_number")
    assert [e.last_error for e in enrollments] == [
        f"CA server {ca.name}: cannot reach {ca.scep_url}: Connection refused"
    ] * 2
    first = enrollments[0]
    assert AuditEvent.objects.filter(action="issue_failed", object_id=str(template.pk)).count() == 2
    # The CA is back: the same key and transaction are sent again.
    ca.scep_url = scepserver.url
    ca.save()
    assert generate_pending_identities() == 2
    identity = Identity.objects.get(device=first.device)
    assert crypto.public_key_matches(stored_key(identity), identity.certificate.certificate)
    assert first.transaction_id == client.transaction_id_for(stored_key(identity).public_key())


def test_a_delivery_never_waits_for_the_external_ca_and_says_where_it_stands(scepserver, group):
    ca = external_ca_for(scepserver)
    template = server_side_template(ca)
    device = group.devices.first()

    with pytest.raises(IdentityNotIssued) as caught:
        current_identity(device=device, template=template)

    assert str(caught.value) == (
        f"the identity is requested from external CA server {ca} by the next generation"
    )
    assert scepserver.issued_count() == 0
    assign(profile=pkcs12_profile(template), group=group)
    generate_pending_identities()
    identity = current_identity(device=device, template=template)
    assert identity.certificate.ca == ca


def test_renewal_enrolls_the_replacement_with_the_external_ca(scepserver, group):
    ca = external_ca_for(scepserver)
    template = server_side_template(ca)
    assign(profile=pkcs12_profile(template), group=group)
    generate_pending_identities()
    device = group.devices.first()
    old = Identity.objects.get(device=device)

    assert renew_identity(old.certificate) is True

    new = Identity.objects.get(device=device, current=True)
    assert new.certificate.replaces == old.certificate
    assert new.certificate.certificate.issuer == scepserver.ca_certificate.subject
    assert new.certificate.fingerprint_sha256 != old.certificate.fingerprint_sha256
    old.certificate.refresh_from_db()
    assert old.certificate.status == "superseded"
    assert scepserver.issued_count() == 3


def test_backend_for_an_external_ca_refuses_device_keys_with_a_clear_error(scepserver):
    ca = external_ca_for(scepserver)

    with pytest.raises(IssuanceError) as caught:
        backend_for(ca).issue(None)

    assert "Device keys for an external CA go through delegate or proxy delivery" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("key_generation", "delivery", "error"),
    [
        (KeyGeneration.DEVICE, ExternalDelivery.SERVER_SIDE, "needs key generation on the server"),
        (KeyGeneration.SERVER, ExternalDelivery.PROXY, "can only be delivered server-side"),
        (KeyGeneration.SERVER, ExternalDelivery.DELEGATE, "can only be delivered server-side"),
    ],
)
def test_server_side_delivery_goes_with_server_keys_for_an_external_ca(
    scepserver, key_generation, delivery, error
):
    template = server_side_template(
        external_ca_for(scepserver), key_generation=key_generation, external_delivery=delivery
    )

    with pytest.raises(ValidationError) as caught:
        template.full_clean()

    assert error in caught.value.message_dict["external_delivery"][0]
