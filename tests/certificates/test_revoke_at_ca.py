"""Revocation of certificates an external SCEP CA issued: SCEP cannot ask the CA to revoke,
so when a grace period ends (or an administrator revokes one) the certificate is revoked
in mdmcerts and put on the "revoke at the CA" list; no CRL of mdmcerts changes for it, and
an administrator marks it done once revoked at the CA.

Personas: dana's laptop holds a certificate of the local CA (its Wi-Fi profile) and one
learned from the external CA (``tests/certificates/lifecycle_fixtures.py``); alice marks
revocations done; bob may only look.
"""

import datetime

import pytest
import time_machine
from django.utils import timezone

from apps.audit.services import history_for
from apps.certificates.models import Certificate, CertificateToRevokeAtCA
from apps.certificates.services import (
    mark_revoked_at_ca,
    revoke_certificate,
    sweep_revocations,
)
from apps.devices import services as devices
from apps.pki.models import CertificateRevocationList
from apps.profiles.models import Delivery, ProfileAssignment
from apps.profiles.services import unassign
from tests.certificates.lifecycle_fixtures import *  # noqa: F403
from tests.certificates.lifecycle_fixtures import crl_serials
from tests.external_issuer import (
    carrying_profile,
    external_template,
    force_external_issuer,
    pem_entry,
)

pytestmark = pytest.mark.django_db
HOUR = datetime.timedelta(hours=1)
LIST = "/admin/certificates/certificatetorevokeatca/"


@pytest.fixture
def external(laptop):
    """The external CA's certificate learned from the laptop's inventory, beside the local
    one: (issuer, profile, certificate)."""
    issuer = force_external_issuer()
    profile = carrying_profile(external_template(issuer.ca), laptop.device)
    cert = issuer.issue("O=Zylker,OU=dana,CN=SN-DANA-1")
    laptop.checkin(
        installed_certificates=[{"pem": laptop.certificate.certificate_pem}, pem_entry(cert)]
    )
    return issuer, profile, Certificate.objects.get(ca=issuer.ca)


def over(moment: datetime.datetime):
    return time_machine.travel(moment + 24 * HOUR + datetime.timedelta(seconds=1), tick=False)


def todo() -> set[int]:
    return set(
        Certificate.objects.filter(
            revoke_at_ca_requested_at__isnull=False, revoke_at_ca_done_at__isnull=True
        ).values_list("pk", flat=True)
    )


def test_an_unassigned_external_certificate_ends_on_the_revoke_at_the_ca_list(laptop, external, ca):
    issuer, profile, certificate = external
    crls_before = list(CertificateRevocationList.objects.values_list("ca", "number"))
    start = timezone.now()
    unassign(assignment=ProfileAssignment.objects.get(profile=profile))

    with over(start):
        swept = sweep_revocations()
        ended = timezone.now()

    certificate.refresh_from_db()
    assert (swept["revoked"], swept["CRLs published"]) == (1, 0)
    assert (certificate.status, certificate.revocation_reason) == (
        "revoked",
        "cessation_of_operation",
    )
    assert (certificate.revoke_at_ca_requested_at, certificate.revoke_at_ca_done_at) == (
        ended,
        None,
    )
    assert todo() == {certificate.pk}
    assert list(CertificateRevocationList.objects.values_list("ca", "number")) == crls_before
    assert not CertificateRevocationList.objects.filter(ca=issuer.ca).exists()
    # The profile that installed it is removed from the device at its next check-in.
    assert [item["profile_id"] for item in laptop.checkin().remove] == [profile.pk]
    assert Delivery.objects.get(device=laptop.device, profile=profile).status == "removal_pending"
    event = history_for(certificate).first()
    assert (event.action, event.message) == (
        "revoke",
        "grace period over (Profile unassigned from the device): revoked in mdmcerts; "
        "to be revoked at its external CA by an administrator",
    )
    assert event.changes["revoke_at_ca_requested_at"] == [None, str(ended)]
    assert Certificate.objects.get(pk=laptop.certificate.pk).status == "active"


def test_one_sweep_revokes_both_and_only_the_local_ca_publishes(laptop, external, ca):
    issuer, _, certificate = external
    start = timezone.now()
    devices.unenroll(device=laptop.device)

    with over(start):
        swept = sweep_revocations()

    assert (swept["revoked"], swept["CRLs published"]) == (2, 1)
    assert crl_serials(ca) == {laptop.certificate.serial.lstrip("0"): "Cessation Of Operation"}
    assert not CertificateRevocationList.objects.filter(ca=issuer.ca).exists()
    assert todo() == {certificate.pk}


def test_a_template_without_revocation_only_marks_it_removed(laptop, external):
    _, profile, certificate = external
    certificate.template.revocation_enabled = False
    certificate.template.save()
    start = timezone.now()
    unassign(assignment=ProfileAssignment.objects.get(profile=profile))

    with over(start):
        sweep_revocations()

    certificate.refresh_from_db()
    assert (certificate.status, certificate.revoke_at_ca_requested_at) == ("removed", None)
    assert todo() == set()


def test_revoking_one_by_hand_puts_it_on_the_list_and_publishes_no_crl(
    external, alice, django_capture_on_commit_callbacks
):
    issuer, _, certificate = external

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        revoked = revoke_certificate(certificate=certificate, reason="key_compromise", actor=alice)

    assert callbacks == []
    assert (revoked.status, revoked.revoke_at_ca_requested_at) == ("revoked", revoked.revoked_at)
    assert todo() == {certificate.pk}
    assert not CertificateRevocationList.objects.filter(ca=issuer.ca).exists()
    event = history_for(certificate).get(action="revoke")
    assert event.message == (
        f"{issuer.ca} is an external SCEP CA, which cannot be asked to revoke over SCEP: "
        "revoke it there, then mark it revoked at the CA (Certificates to revoke at the CA)"
    )


def test_the_list_shows_what_to_revoke_at_the_ca(client, alice, external, laptop):
    _, _, certificate = external
    revoke_certificate(certificate=certificate)
    client.force_login(alice)

    response = client.get(f"{LIST}?revoke_at_ca=todo")

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [certificate.pk]
    assert certificate.serial_colon_hex in response.content.decode()
    everything = client.get(LIST).context["cl"].result_list
    assert [row.pk for row in everything] == [certificate.pk]  # the local one is not listed


def test_alice_marks_it_revoked_at_the_ca(client, alice, external):
    _, _, certificate = external
    revoke_certificate(certificate=certificate)
    client.force_login(alice)

    response = client.post(
        LIST,
        {"action": "mark_revoked_at_ca", "_selected_action": [certificate.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "1 certificate(s) marked revoked at the CA." in response.content.decode()
    certificate.refresh_from_db()
    assert certificate.revoke_at_ca_done_at is not None
    assert todo() == set()
    event = history_for(certificate).first()
    assert (event.action, event.actor, event.message) == (
        "update",
        alice,
        f"marked revoked at the CA server {certificate.ca}",
    )
    assert event.changes == {"revoke_at_ca_done_at": [None, str(certificate.revoke_at_ca_done_at)]}
    assert [r.pk for r in client.get(f"{LIST}?revoke_at_ca=done").context["cl"].result_list] == [
        certificate.pk
    ]


def test_marking_twice_changes_nothing_the_second_time(external):
    _, _, certificate = external
    revoke_certificate(certificate=certificate)
    rows = CertificateToRevokeAtCA.objects.filter(pk=certificate.pk)

    first, second = mark_revoked_at_ca(certificates=rows), mark_revoked_at_ca(certificates=rows)

    assert (first, second) == (1, 0)
    assert history_for(certificate).filter(message__startswith="marked revoked").count() == 1


def test_bob_cannot_mark_it_revoked_at_the_ca(client, bob, external):
    _, _, certificate = external
    revoke_certificate(certificate=certificate)
    client.force_login(bob)

    listed = client.get(LIST)
    response = client.post(
        LIST, {"action": "mark_revoked_at_ca", "_selected_action": [certificate.pk]}, follow=True
    )

    assert listed.status_code == 200
    assert "mark_revoked_at_ca" not in listed.content.decode()  # not offered to bob
    assert "No action selected." in response.content.decode()
    certificate.refresh_from_db()
    assert certificate.revoke_at_ca_done_at is None
    assert not history_for(certificate).filter(message__startswith="marked revoked").exists()
