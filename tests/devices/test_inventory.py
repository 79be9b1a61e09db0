"""Inventory at check-in: installed certificates reported as PEM or fingerprint, matched
to the certificates mdmcerts issued by SHA-256 fingerprint."""

import datetime

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from apps.devices import services
from apps.devices.models import InstalledCertificate
from apps.pki import crypto
from tests.factories import force_certificate, self_signed_ca

pytestmark = pytest.mark.django_db


@pytest.fixture
def laptop(enroll):
    return enroll()


@pytest.fixture
def issued():
    """A certificate mdmcerts issued."""
    return force_certificate()


@pytest.fixture
def foreign():
    """A certificate mdmcerts knows nothing of."""
    return self_signed_ca(ec.generate_private_key(ec.SECP256R1()), ca=False)


def inventory(device) -> dict[str, tuple]:
    return {
        row.fingerprint_sha256: (row.subject, row.certificate_id)
        for row in InstalledCertificate.objects.filter(device=device)
    }


def test_reported_certificates_are_matched_to_those_mdmcerts_issued(laptop, issued, foreign):
    services.request_scan(device=laptop.device)
    assert laptop.checkin()["scan_requested"] is True

    answer = laptop.checkin(
        {
            "installed_certificates": [
                {"pem": issued.certificate_pem},
                {"pem": crypto.cert_pem(foreign)},
            ]
        }
    )

    assert answer["scan_requested"] is False
    assert inventory(laptop.device) == {
        issued.fingerprint_sha256: (issued.subject, issued.pk),
        crypto.fingerprint_sha256(foreign): (crypto.format_name(foreign.subject), None),
    }
    row = InstalledCertificate.objects.get(certificate=issued)
    assert (row.issuer, row.not_after) == (
        crypto.format_name(issued.certificate.issuer),
        issued.not_after,
    )
    laptop.device.refresh_from_db()
    assert laptop.device.scan_requested is False
    assert laptop.device.last_inventory_at == laptop.device.last_checkin_at


def test_a_fingerprint_matches_as_tools_print_it(laptop, issued):
    colons = ":".join(issued.fingerprint_sha256[i : i + 2] for i in range(0, 64, 2)).upper()

    laptop.checkin({"installed_certificates": [{"fingerprint_sha256": colons}]})

    row = InstalledCertificate.objects.get()
    assert (row.fingerprint_sha256, row.certificate, row.subject) == (
        issued.fingerprint_sha256,
        issued,
        issued.subject,
    )
    assert row.issuer == crypto.format_name(issued.certificate.issuer)


def test_an_unknown_fingerprint_is_kept_without_details(laptop):
    laptop.checkin({"installed_certificates": [{"fingerprint_sha256": "ab" * 32}]})

    assert inventory(laptop.device) == {"ab" * 32: ("", None)}


def test_a_certificate_no_longer_reported_leaves_the_inventory(laptop, issued, foreign):
    both = [{"pem": issued.certificate_pem}, {"pem": crypto.cert_pem(foreign)}]
    laptop.checkin({"installed_certificates": both})
    first_seen = InstalledCertificate.objects.get(certificate=issued).first_seen_at

    later = timezone.now().replace(microsecond=0) + datetime.timedelta(hours=1)
    with time_machine.travel(later, tick=False):
        laptop.checkin(
            {"installed_certificates": [{"fingerprint_sha256": issued.fingerprint_sha256}]}
        )

    row = InstalledCertificate.objects.get()
    assert (row.certificate, row.subject) == (issued, issued.subject)
    assert (row.first_seen_at, row.last_seen_at) == (first_seen, later)


def test_no_inventory_keeps_it_and_an_empty_one_clears_it(laptop, issued):
    laptop.checkin({"installed_certificates": [{"pem": issued.certificate_pem}]})

    laptop.checkin({"facts": {"name": "still here"}})
    kept = inventory(laptop.device)
    laptop.checkin({"installed_certificates": []})

    assert kept == {issued.fingerprint_sha256: (issued.subject, issued.pk)}
    assert inventory(laptop.device) == {}


def test_the_same_certificate_twice_is_one_row(laptop, issued):
    laptop.checkin(
        {
            "installed_certificates": [
                {"fingerprint_sha256": issued.fingerprint_sha256},
                {"pem": issued.certificate_pem, "fingerprint_sha256": issued.fingerprint_sha256},
            ]
        }
    )

    assert inventory(laptop.device) == {issued.fingerprint_sha256: (issued.subject, issued.pk)}


def test_a_pem_that_contradicts_its_fingerprint_is_refused(laptop, issued):
    response = laptop.api.post(
        "checkin",
        {
            "installed_certificates": [
                {"pem": issued.certificate_pem, "fingerprint_sha256": "0" * 64}
            ]
        },
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "installed_certificates[0]: fingerprint_sha256 is not the fingerprint of pem"
    }
    assert not InstalledCertificate.objects.exists()


def test_an_inventory_beyond_the_limit_is_refused(laptop):
    entries = [{"fingerprint_sha256": f"{i:064x}"} for i in range(1001)]

    response = laptop.api.post("checkin", {"installed_certificates": entries})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "installed_certificates: Ensure this field has no more than 1000 elements."
    }
    assert not InstalledCertificate.objects.exists()
