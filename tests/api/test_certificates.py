"""Staff API: the certificate inventory (list with filters and search, detail, revoke)."""

import datetime
from dataclasses import dataclass

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.certificates.services import revoke_certificate
from apps.enrollment.models import CertificateTemplate
from apps.pki.models import CertificateAuthority
from tests.api.helpers import drf_datetime
from tests.factories import force_ca, force_certificate, force_template, force_user

LIST_URL = "/api/v1/certificates/"


def detail_url(certificate: Certificate) -> str:
    return f"{LIST_URL}{certificate.pk}/"


def revoke_url(certificate: Certificate) -> str:
    return f"{LIST_URL}{certificate.pk}/revoke/"


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def state(certificate: Certificate) -> tuple:
    """What a refused request must leave unchanged."""
    fresh = Certificate.objects.get(pk=certificate.pk)
    return (fresh.status, fresh.revoked_at, fresh.revocation_reason, AuditEvent.objects.count())


@dataclass
class Inventory:
    ca_a: CertificateAuthority
    ca_b: CertificateAuthority
    year_template: CertificateTemplate
    expired: Certificate  # status still "active": nothing has marked it expired yet
    week: Certificate
    month: Certificate
    quarter: Certificate
    year: Certificate
    revoked: Certificate

    def newest_first(self, *certificates: Certificate) -> list[int]:
        return sorted((c.pk for c in certificates), reverse=True)


@pytest.fixture
def inventory(db) -> Inventory:
    with time_machine.travel(timezone.now() - datetime.timedelta(days=400), tick=False):
        ca_a, ca_b = force_ca(), force_ca()
        expired = force_certificate(
            template=force_template(ca=ca_a, validity_days=30), user=force_user("dora")
        )
    week = force_certificate(
        template=force_template(
            ca=ca_a, validity_days=5, sans=[("dns", "$USERID$.laptops.zylker.test")]
        ),
        user=force_user("erin"),
    )
    month = force_certificate(
        template=force_template(ca=ca_a, validity_days=20), user=force_user("frank")
    )
    quarter = force_certificate(
        template=force_template(ca=ca_b, validity_days=60, sans=[("rfc822", "$EMAIL$")]),
        user=force_user("grace"),
    )
    year_template = force_template(ca=ca_b, validity_days=200)
    year = force_certificate(template=year_template, user=force_user("heidi"))
    revoked = force_certificate(template=year_template, user=force_user("ivan"))
    revoke_certificate(certificate=revoked, reason="superseded")
    return Inventory(
        ca_a,
        ca_b,
        year_template,
        expired,
        week,
        month,
        quarter,
        year,
        Certificate.objects.get(pk=revoked.pk),
    )


def test_alice_lists_every_certificate_newest_first(api_as, alice, inventory):
    response = api_as(alice).get(LIST_URL)

    assert ids(response) == inventory.newest_first(
        inventory.expired,
        inventory.week,
        inventory.month,
        inventory.quarter,
        inventory.year,
        inventory.revoked,
    )
    assert response.json()["count"] == 6
    assert "certificate_pem" not in response.json()["results"][0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=revoked", ["revoked"]),
        ("status=active", ["expired", "week", "month", "quarter", "year"]),
        ("status=expired", []),
        ("expires_within_days=7", ["week"]),
        ("expires_within_days=30", ["week", "month"]),
        ("expires_within_days=90", ["week", "month", "quarter"]),
        ("expires_within_days=3", []),
        ("template={year_template}", ["year", "revoked"]),
        ("ca={ca_a}", ["expired", "week", "month"]),
        ("ca={ca_b}&expires_within_days=90", ["quarter"]),
        ("ca={ca_b}&status=active", ["quarter", "year"]),
    ],
)
def test_the_filters_return_exactly_the_matching_certificates(
    api_as, alice, inventory, query, expected
):
    query = query.format(
        year_template=inventory.year_template.pk, ca_a=inventory.ca_a.pk, ca_b=inventory.ca_b.pk
    )

    response = api_as(alice).get(f"{LIST_URL}?{query}")

    assert ids(response) == inventory.newest_first(*(getattr(inventory, name) for name in expected))


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("CN=grace", "quarter"),
        ("GRACE@example.com", "quarter"),
        ("erin.laptops.zylker.test", "week"),
    ],
)
def test_the_search_finds_subjects_and_subject_alternative_names(
    api_as, alice, inventory, search, expected
):
    response = api_as(alice).get(LIST_URL, {"q": search})

    assert ids(response) == [getattr(inventory, expected).pk]


def test_the_search_finds_a_serial_written_as_stored_or_as_colon_hex(api_as, alice, inventory):
    client = api_as(alice)
    serial = inventory.month.serial

    searches = [
        serial,
        serial.upper(),
        inventory.month.serial_colon_hex,
        "00:" + inventory.month.serial_colon_hex,
    ]

    assert [ids(client.get(LIST_URL, {"q": q})) for q in searches] == [[inventory.month.pk]] * 4


def test_the_search_finds_a_fingerprint_or_a_part_of_it(api_as, alice, inventory):
    client = api_as(alice)
    fingerprint = inventory.year.fingerprint_sha256
    colon_form = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()

    searches = [fingerprint, fingerprint[:20], colon_form]

    assert [ids(client.get(LIST_URL, {"q": q})) for q in searches] == [[inventory.year.pk]] * 3


def test_an_empty_search_filters_nothing(api_as, alice, inventory):
    assert len(ids(api_as(alice).get(LIST_URL, {"q": ""}))) == 6


def test_a_search_without_a_match_returns_nothing(api_as, alice, inventory):
    assert ids(api_as(alice).get(LIST_URL, {"q": "nobody.example.org"})) == []


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("status=lost", {"status": ['"lost" is not a valid choice.']}),
        (
            "expires_within_days=0",
            {"expires_within_days": ["Ensure this value is greater than or equal to 1."]},
        ),
        ("expires_within_days=soon", {"expires_within_days": ["A valid integer is required."]}),
        ("ca=first", {"ca": ["A valid integer is required."]}),
    ],
)
def test_an_invalid_filter_is_a_400_naming_the_parameter(api_as, alice, inventory, query, errors):
    response = api_as(alice).get(f"{LIST_URL}?{query}")

    assert response.status_code == 400
    assert response.json() == errors


def test_the_detail_has_the_pem_the_sans_as_a_list_and_the_links(api_as, alice, inventory):
    certificate = inventory.week

    response = api_as(alice).get(detail_url(certificate))

    assert response.status_code == 200
    assert response.json() == {
        "id": certificate.pk,
        "serial": certificate.serial,
        "subject": "O=mdmcerts tests,CN=erin",
        "subject_alt_names": ["DNS:erin.laptops.zylker.test"],
        "not_before": drf_datetime(certificate.not_before),
        "not_after": drf_datetime(certificate.not_after),
        "fingerprint_sha256": certificate.fingerprint_sha256,
        "status": "active",
        "revoked_at": None,
        "revocation_reason": "",
        "source": "scep",
        "ca": inventory.ca_a.pk,
        "template": certificate.template_id,
        "user": certificate.user_id,
        "created_at": drf_datetime(certificate.created_at),
        "certificate_pem": certificate.certificate_pem,
    }


def test_the_detail_of_a_revoked_certificate_shows_its_revocation(api_as, alice, inventory):
    response = api_as(alice).get(detail_url(inventory.revoked))

    assert response.json()["status"] == "revoked"
    assert response.json()["revocation_reason"] == "superseded"
    assert response.json()["revoked_at"] == drf_datetime(inventory.revoked.revoked_at)


def test_alice_revokes_a_certificate_with_a_reason(api_as, alice, inventory):
    certificate = inventory.quarter
    moment = datetime.datetime(2031, 5, 4, 12, 0, tzinfo=datetime.UTC)

    with time_machine.travel(moment, tick=False):
        response = api_as(alice).post(
            revoke_url(certificate), {"reason": "key_compromise"}, format="json"
        )

    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["revocation_reason"] == "key_compromise"
    assert response.json()["revoked_at"] == "2031-05-04T12:00:00Z"
    certificate.refresh_from_db()
    assert (certificate.status, certificate.revocation_reason, certificate.revoked_at) == (
        "revoked",
        "key_compromise",
        moment,
    )
    event = AuditEvent.objects.get(action="revoke", object_id=str(certificate.pk))
    assert (event.actor, event.source_ip, event.created_at) == (alice, "127.0.0.1", moment)
    assert event.changes == {
        "status": ["active", "revoked"],
        "revocation_reason": ["", "key_compromise"],
    }


def test_a_revocation_without_a_reason_is_unspecified(api_as, alice, inventory):
    response = api_as(alice).post(revoke_url(inventory.week), {}, format="json")

    assert response.status_code == 200
    inventory.week.refresh_from_db()
    assert (inventory.week.status, inventory.week.revocation_reason) == ("revoked", "unspecified")


def test_an_unknown_revocation_reason_is_refused_and_nothing_changes(api_as, alice, inventory):
    before = state(inventory.week)

    response = api_as(alice).post(revoke_url(inventory.week), {"reason": "bored"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"reason": ['"bored" is not a valid choice.']}
    assert state(inventory.week) == before


def test_revoking_a_revoked_certificate_is_a_conflict_and_nothing_changes(api_as, alice, inventory):
    certificate = inventory.revoked
    before = state(certificate)

    response = api_as(alice).post(
        revoke_url(certificate), {"reason": "key_compromise"}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {"detail": f"Certificate {certificate.serial} is already revoked."}
    assert state(certificate) == before


def test_revoking_twice_through_the_api_is_refused_the_second_time(api_as, alice, inventory):
    client = api_as(alice)
    first = client.post(revoke_url(inventory.year), {"reason": "superseded"}, format="json")
    after_first = state(inventory.year)

    second = client.post(revoke_url(inventory.year), {"reason": "key_compromise"}, format="json")

    assert (first.status_code, second.status_code) == (200, 409)
    assert state(inventory.year) == after_first
    assert after_first[2] == "superseded"


def test_a_staff_user_with_the_change_permission_can_revoke(api_as, inventory):
    dave = force_user("dave", is_staff=True)
    dave.user_permissions.set(
        Permission.objects.filter(codename__in=["view_certificate", "change_certificate"])
    )

    response = api_as(dave).post(
        revoke_url(inventory.week), {"reason": "cessation_of_operation"}, format="json"
    )

    assert response.status_code == 200
    assert AuditEvent.objects.get(action="revoke", object_id=str(inventory.week.pk)).actor == dave


def test_bob_can_read_certificates_but_not_revoke_them(api_as, bob, inventory):
    client = api_as(bob)
    before = state(inventory.week)

    reads = [client.get(LIST_URL), client.get(detail_url(inventory.week))]
    revoke = client.post(revoke_url(inventory.week), {"reason": "key_compromise"}, format="json")

    assert [r.status_code for r in reads] == [200, 200]
    assert revoke.status_code == 403
    assert state(inventory.week) == before


def test_the_add_permission_alone_does_not_allow_revoking(api_as, inventory):
    mallory = force_user("mallory", is_staff=True)
    mallory.user_permissions.set(
        Permission.objects.filter(codename__in=["view_certificate", "add_certificate"])
    )
    before = state(inventory.week)

    response = api_as(mallory).post(revoke_url(inventory.week), {}, format="json")

    assert response.status_code == 403
    assert state(inventory.week) == before


def test_charlie_and_anonymous_are_refused_and_nothing_changes(
    api_as, charlie, anonymous, inventory
):
    before = state(inventory.week)

    for client, expected in ((api_as(charlie), 403), (anonymous, 401)):
        responses = [
            client.get(LIST_URL),
            client.get(detail_url(inventory.week)),
            client.post(revoke_url(inventory.week), {"reason": "key_compromise"}, format="json"),
        ]
        assert [r.status_code for r in responses] == [expected] * 3
        assert all(b"BEGIN CERTIFICATE" not in r.content for r in responses)

    assert state(inventory.week) == before


def test_certificates_cannot_be_created_changed_or_deleted_through_the_api(
    api_as, alice, inventory
):
    client = api_as(alice)
    before = state(inventory.week)

    responses = [
        client.post(LIST_URL, {"serial": "01"}, format="json"),
        client.patch(detail_url(inventory.week), {"status": "revoked"}, format="json"),
        client.put(detail_url(inventory.week), {"status": "revoked"}, format="json"),
        client.delete(detail_url(inventory.week)),
    ]

    assert [r.status_code for r in responses] == [405] * 4
    assert state(inventory.week) == before
    assert Certificate.objects.count() == 6
