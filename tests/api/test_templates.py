"""Staff API: request templates (CRUD with SAN rows, write-only static challenge, audit)."""

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.audit.services import secret_marker
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from tests.api.helpers import drf_datetime
from tests.factories import force_ca, force_certificate, force_template

LIST_URL = "/api/v1/templates/"
CHALLENGE = "Zylker-Enroll-2025!"
UNKNOWN_VARIABLE = (
    "Unknown variable: {}. Use $NAME$ variables such as $EMAIL$ or $DEVICE_SN$, "
    "or the %username% / {{EnrollmentUser}} forms."
)


def detail_url(template: CertificateTemplate) -> str:
    return f"{LIST_URL}{template.pk}/"


def payload(ca, **overrides) -> dict:
    data = {
        "name": "Wi-Fi users",
        "slug": "wifi-users",
        "description": "EAP-TLS for staff laptops",
        "ca": ca.pk,
        "subject": "O=Zylker,CN=$USERID$",
        "subject_alternative_names": [
            {"san_type": "rfc822", "value": "$EMAIL$"},
            {"san_type": "upn", "value": "%username%@zylker.test"},
        ],
        "key_algorithm": "ec-p256",
        "extended_key_usages": ["1.3.6.1.5.5.7.3.2"],
        "validity_days": 365,
        "challenge_type": "dynamic",
    }
    data.update(overrides)
    return data


def san_rows(template: CertificateTemplate) -> list[tuple[str, str, int]]:
    return list(
        TemplateSubjectAltName.objects.filter(template=template)
        .order_by("position")
        .values_list("san_type", "value", "position")
    )


def raw_static_challenge(template: CertificateTemplate) -> str:
    """The column as stored, read past the ORM."""
    table = CertificateTemplate._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT static_challenge FROM {table} WHERE id = %s",  # noqa: S608
            [template.pk],
        )
        return cursor.fetchone()[0]


def state(template: CertificateTemplate) -> tuple:
    """What a refused request must leave unchanged."""
    fresh = CertificateTemplate.objects.get(pk=template.pk)
    return (
        fresh.name,
        fresh.subject,
        fresh.static_challenge,
        fresh.updated_at,
        san_rows(fresh),
        AuditEvent.objects.count(),
    )


@pytest.fixture
def ca(db):
    return force_ca()


@pytest.fixture
def template(ca):
    return force_template(
        ca=ca,
        sans=[("dns", "$USERID$.users.zylker.test")],
        challenge_type="static",
        static_challenge=CHALLENGE,
    )


def test_alice_creates_a_template_with_its_san_rows(api_as, alice, ca):
    response = api_as(alice).post(LIST_URL, payload(ca), format="json")

    assert response.status_code == 201
    template = CertificateTemplate.objects.get()
    assert response.json() == {
        "id": template.pk,
        "name": "Wi-Fi users",
        "slug": "wifi-users",
        "description": "EAP-TLS for staff laptops",
        "ca": ca.pk,
        "subject": "O=Zylker,CN=$USERID$",
        "subject_alternative_names": [
            {"san_type": "rfc822", "value": "$EMAIL$"},
            {"san_type": "upn", "value": "%username%@zylker.test"},
        ],
        "key_algorithm": "ec-p256",
        "key_usage_digital_signature": True,
        "key_usage_key_encipherment": True,
        "extended_key_usages": ["1.3.6.1.5.5.7.3.2"],
        "validity_days": 365,
        "auto_renew": True,
        "renew_before_days": 30,
        "revocation_enabled": True,
        "revocation_grace_hours": None,
        "challenge_type": "dynamic",
        "has_static_challenge": False,
        "max_failed_attempts": 5,
        "retry_interval_seconds": 60,
        "key_generation": "device",
        "external_delivery": "proxy",
        "subject_source": "template",
        "allowed_request_san_types": [],
        "approval_required": False,
        "created_at": drf_datetime(template.created_at),
        "updated_at": drf_datetime(template.updated_at),
    }
    assert san_rows(template) == [("rfc822", "$EMAIL$", 0), ("upn", "%username%@zylker.test", 1)]


def test_creating_a_template_records_an_audit_event(api_as, alice, ca):
    api_as(alice).post(LIST_URL, payload(ca), format="json")

    template = CertificateTemplate.objects.get()
    event = AuditEvent.objects.get(object_id=str(template.pk), object_repr=template.name)
    assert (event.action, event.actor, event.object_id, event.object_repr) == (
        "create",
        alice,
        str(template.pk),
        "Wi-Fi users",
    )
    assert event.changes["subject_alternative_names"] == [
        None,
        ["rfc822:$EMAIL$", "upn:%username%@zylker.test"],
    ]
    assert event.source_ip == "127.0.0.1"


def test_alice_lists_and_reads_templates(api_as, alice, template):
    client = api_as(alice)

    listed = client.get(LIST_URL)
    detail = client.get(detail_url(template))

    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["results"]] == [template.pk]
    assert detail.status_code == 200
    assert detail.json()["subject_alternative_names"] == [
        {"san_type": "dns", "value": "$USERID$.users.zylker.test"}
    ]
    assert detail.json()["has_static_challenge"] is True


def test_the_static_challenge_is_write_only_and_stored_encrypted(api_as, alice, ca):
    client = api_as(alice)

    created = client.post(
        LIST_URL, payload(ca, challenge_type="static", static_challenge=CHALLENGE), format="json"
    )

    assert created.status_code == 201
    template = CertificateTemplate.objects.get()
    responses = [
        created,
        client.get(LIST_URL),
        client.get(detail_url(template)),
        client.patch(detail_url(template), {"description": "x"}, format="json"),
        client.options(detail_url(template)),
    ]
    for response in responses:
        assert CHALLENGE.encode() not in response.content
    for response in responses[:4]:
        assert "static_challenge" not in response.json().get("results", [response.json()])[0]
    assert created.json()["has_static_challenge"] is True
    raw = raw_static_challenge(template)
    assert raw.startswith("mdmc1:")
    assert CHALLENGE not in raw
    assert template.reveal_static_challenge() == CHALLENGE
    assert CHALLENGE not in str(list(AuditEvent.objects.values_list("changes", flat=True)))


def test_it_refuses_a_template_with_an_unknown_variable_in_the_subject(api_as, alice, ca):
    events = AuditEvent.objects.count()

    response = api_as(alice).post(
        LIST_URL, payload(ca, subject="O=Zylker,CN=$NOPE$"), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"subject": [UNKNOWN_VARIABLE.format("$NOPE$")]}
    assert CertificateTemplate.objects.count() == 0
    assert AuditEvent.objects.count() == events


def test_it_refuses_a_template_with_an_unknown_variable_in_a_san(api_as, alice, ca):
    sans = [
        {"san_type": "dns", "value": "host.zylker.test"},
        {"san_type": "rfc822", "value": "{NoSuchThing}@zylker.test"},
    ]

    response = api_as(alice).post(
        LIST_URL, payload(ca, subject_alternative_names=sans), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "subject_alternative_names": {"1": {"value": [UNKNOWN_VARIABLE.format("{NoSuchThing}")]}}
    }
    assert CertificateTemplate.objects.count() == 0
    assert TemplateSubjectAltName.objects.count() == 0


def test_it_refuses_a_subject_that_is_not_a_distinguished_name(api_as, alice, ca):
    response = api_as(alice).post(LIST_URL, payload(ca, subject="Zylker users"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "subject": ["Subject: 'Zylker users' is not of the form NAME=value."]
    }


def test_it_refuses_extended_key_usages_that_are_not_oids(api_as, alice, ca):
    response = api_as(alice).post(
        LIST_URL, payload(ca, extended_key_usages=["clientAuth"]), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "extended_key_usages": ["'clientAuth' is not an OID such as 1.3.6.1.5.5.7.3.2."]
    }


def test_it_refuses_any_extended_key_usage(api_as, alice, ca):
    response = api_as(alice).post(
        LIST_URL, payload(ca, extended_key_usages=["2.5.29.37.0"]), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "extended_key_usages": ["anyExtendedKeyUsage is never issued; list the usages needed."]
    }


def test_it_refuses_a_static_challenge_type_without_a_password(api_as, alice, ca):
    response = api_as(alice).post(LIST_URL, payload(ca, challenge_type="static"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "challenge_type": ["A static challenge needs its enrollment challenge password."]
    }
    assert CertificateTemplate.objects.count() == 0


def test_it_refuses_request_san_types_when_the_subject_comes_from_the_template(api_as, alice, ca):
    response = api_as(alice).post(
        LIST_URL, payload(ca, allowed_request_san_types=["dns"]), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "allowed_request_san_types": ["Only used when the subject comes from the request."]
    }


def test_it_refuses_a_duplicate_slug(api_as, alice, template):
    response = api_as(alice).post(
        LIST_URL, payload(template.ca, name="Other", slug=template.slug), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"slug": ["request template with this slug already exists."]}
    assert CertificateTemplate.objects.count() == 1


def test_a_put_replaces_the_san_rows_wholesale_and_keeps_the_static_challenge(
    api_as, alice, template
):
    data = payload(
        template.ca,
        challenge_type="static",
        subject_alternative_names=[
            {"san_type": "uri", "value": "urn:device:$DEVICE_UDID$"},
            {"san_type": "dns", "value": "%devicename%.zylker.test"},
        ],
    )

    response = api_as(alice).put(detail_url(template), data, format="json")

    assert response.status_code == 200
    assert response.json()["subject_alternative_names"] == data["subject_alternative_names"]
    assert response.json()["has_static_challenge"] is True
    template.refresh_from_db()
    assert san_rows(template) == [
        ("uri", "urn:device:$DEVICE_UDID$", 0),
        ("dns", "%devicename%.zylker.test", 1),
    ]
    assert (template.name, template.slug) == ("Wi-Fi users", "wifi-users")
    assert template.reveal_static_challenge() == CHALLENGE


def test_an_update_records_the_san_diff_in_the_audit_event(api_as, alice, template):
    sans = [{"san_type": "rfc822", "value": "$EMAIL$"}]

    api_as(alice).patch(detail_url(template), {"subject_alternative_names": sans}, format="json")

    event = AuditEvent.objects.get(action="update")
    assert event.actor == alice
    assert event.object_id == str(template.pk)
    assert event.changes["subject_alternative_names"] == [
        ["dns:$USERID$.users.zylker.test"],
        ["rfc822:$EMAIL$"],
    ]


def test_a_patch_without_san_rows_keeps_them(api_as, alice, template):
    response = api_as(alice).patch(detail_url(template), {"validity_days": 90}, format="json")

    assert response.status_code == 200
    template.refresh_from_db()
    assert template.validity_days == 90
    assert san_rows(template) == [("dns", "$USERID$.users.zylker.test", 0)]


def test_an_empty_list_removes_every_san_row(api_as, alice, template):
    response = api_as(alice).patch(
        detail_url(template), {"subject_alternative_names": []}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["subject_alternative_names"] == []
    assert san_rows(template) == []


def test_replacing_the_static_challenge_is_audited_without_the_secret(api_as, alice, template):
    new_challenge = "Another-Secret-42"

    response = api_as(alice).patch(
        detail_url(template), {"static_challenge": new_challenge}, format="json"
    )

    assert response.status_code == 200
    template.refresh_from_db()
    assert template.reveal_static_challenge() == new_challenge
    event = AuditEvent.objects.get(action="update")
    old, new = event.changes["static_challenge"]
    assert old.startswith("(secret ") and new == secret_marker(template.static_challenge)
    assert old != new
    assert new_challenge not in str(event.changes)
    assert CHALLENGE not in str(event.changes)


def test_clearing_the_static_challenge_of_a_static_template_is_refused(api_as, alice, template):
    before = state(template)

    response = api_as(alice).patch(detail_url(template), {"static_challenge": ""}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "challenge_type": ["A static challenge needs its enrollment challenge password."]
    }
    assert state(template) == before


def test_an_invalid_update_changes_nothing(api_as, alice, template):
    before = state(template)

    response = api_as(alice).patch(
        detail_url(template),
        {
            "name": "Renamed",
            "subject": "CN=$NOPE$",
            "subject_alternative_names": [{"san_type": "dns", "value": "x.zylker.test"}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"subject": [UNKNOWN_VARIABLE.format("$NOPE$")]}
    assert state(template) == before


def test_alice_deletes_an_unused_template(api_as, alice, template):
    pk = template.pk

    response = api_as(alice).delete(detail_url(template))

    assert response.status_code == 204
    assert not CertificateTemplate.objects.filter(pk=pk).exists()
    assert TemplateSubjectAltName.objects.count() == 0
    event = AuditEvent.objects.get(action="delete")
    assert (event.actor, event.object_id, event.object_repr) == (alice, str(pk), template.name)


def test_deleting_a_template_that_has_certificates_is_refused(api_as, alice, template):
    certificate = force_certificate(template=template)
    before = state(template)

    response = api_as(alice).delete(detail_url(template))

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Template {template.name} has 1 certificate(s) and cannot be deleted."
    }
    assert state(template) == before
    certificate.refresh_from_db()
    assert certificate.template_id == template.pk


def test_bob_can_read_templates_but_not_change_them(api_as, bob, template):
    client = api_as(bob)
    before = state(template)

    reads = [client.get(LIST_URL), client.get(detail_url(template))]
    writes = [
        client.post(LIST_URL, payload(template.ca), format="json"),
        client.patch(detail_url(template), {"name": "Renamed"}, format="json"),
        client.put(detail_url(template), payload(template.ca), format="json"),
        client.delete(detail_url(template)),
    ]

    assert [r.status_code for r in reads] == [200, 200]
    assert [r.status_code for r in writes] == [403] * 4
    assert state(template) == before
    assert CertificateTemplate.objects.count() == 1


def test_charlie_and_anonymous_are_refused_and_nothing_changes(
    api_as, charlie, anonymous, template
):
    before = state(template)

    for client, expected in ((api_as(charlie), 403), (anonymous, 401)):
        responses = [
            client.get(LIST_URL),
            client.get(detail_url(template)),
            client.post(LIST_URL, payload(template.ca), format="json"),
            client.patch(detail_url(template), {"static_challenge": "stolen"}, format="json"),
            client.delete(detail_url(template)),
        ]
        assert [r.status_code for r in responses] == [expected] * 5
        assert all(CHALLENGE.encode() not in r.content for r in responses)

    assert state(template) == before
    assert CertificateTemplate.objects.count() == 1


def test_a_template_overrides_the_revocation_grace_period_or_falls_back_to_the_global_one(
    api_as, alice, template
):
    response = api_as(alice).patch(
        detail_url(template), {"revocation_grace_hours": 6}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["revocation_grace_hours"] == 6
    template.refresh_from_db()
    assert template.revocation_grace_hours == 6

    cleared = api_as(alice).patch(
        detail_url(template), {"revocation_grace_hours": None}, format="json"
    )
    assert cleared.json()["revocation_grace_hours"] is None
