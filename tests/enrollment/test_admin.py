"""Request templates in the console."""

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import history_for, secret_marker
from apps.enrollment.models import CertificateTemplate
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority
from tests.factories import force_ca, force_certificate, force_template

pytestmark = pytest.mark.django_db
ADD = "/admin/enrollment/certificatetemplate/add/"


def template_form(ca, **overrides) -> dict:
    data = {
        "name": "Wi-Fi users",
        "slug": "wifi-users",
        "description": "",
        "ca": ca.pk,
        "subject": "C=US,O=Zylker,CN=%firstname%",
        "subject_source": "template",
        "key_algorithm": "rsa2048",
        "key_generation": "device",
        "key_usage_digital_signature": "on",
        "key_usage_key_encipherment": "on",
        "eku_choices": ["1.3.6.1.5.5.7.3.2"],
        "custom_ekus": "1.3.6.1.4.1.311.20.2.2",
        "validity_days": "365",
        "auto_renew": "on",
        "renew_before_days": "30",
        "revocation_enabled": "on",
        "challenge_type": "static",
        "static_challenge_input": "Glob4l-Enrollment-Code",
        "max_failed_attempts": "5",
        "retry_interval_seconds": "60",
        "san_rows-TOTAL_FORMS": "2",
        "san_rows-INITIAL_FORMS": "0",
        "san_rows-MIN_NUM_FORMS": "0",
        "san_rows-MAX_NUM_FORMS": "1000",
        "san_rows-0-san_type": "rfc822",
        "san_rows-0-value": "%email%",
        "san_rows-0-position": "0",
        "san_rows-1-san_type": "upn",
        "san_rows-1-value": "$USER_UPN$",
        "san_rows-1-position": "1",
    }
    data.update(overrides)
    return data


def test_alice_creates_a_template_with_san_rows_and_a_write_only_challenge(client, alice):
    ca = force_ca()
    client.force_login(alice)
    response = client.post(ADD, template_form(ca))
    assert response.status_code == 302, response.content.decode()[:3000]
    template = CertificateTemplate.objects.get(slug="wifi-users")
    assert template.extended_key_usages == ["1.3.6.1.5.5.7.3.2", "1.3.6.1.4.1.311.20.2.2"]
    assert [(r.san_type, r.value) for r in template.san_rows.all()] == [
        ("rfc822", "%email%"),
        ("upn", "$USER_UPN$"),
    ]
    assert template.reveal_static_challenge() == "Glob4l-Enrollment-Code"
    assert "Glob4l" not in template.static_challenge
    page = client.get(f"/admin/enrollment/certificatetemplate/{template.pk}/change/")
    assert "Glob4l-Enrollment-Code" not in page.content.decode()
    assert "stored (encrypted)" in page.content.decode()
    event = history_for(template).get(action="create")
    assert event.changes["static_challenge"] == [None, secret_marker(template.static_challenge)]
    assert event.changes["subject_alternative_names"] == [
        None,
        ["rfc822:%email%", "upn:$USER_UPN$"],
    ]


def test_an_unknown_variable_is_a_form_error_and_nothing_is_saved(client, alice):
    ca = force_ca()
    client.force_login(alice)
    response = client.post(ADD, template_form(ca, **{"san_rows-0-value": "$MAIL$"}))
    assert response.status_code == 200
    assert "Unknown variable: $MAIL$" in response.content.decode()
    response = client.post(ADD, template_form(ca, subject="CN={EnrolmentUser}"))
    assert "Unknown variable: {EnrolmentUser}" in response.content.decode()
    assert CertificateTemplate.objects.count() == 0
    assert not AuditEvent.objects.filter(content_type__model="certificatetemplate").exists()


def test_a_static_template_needs_a_challenge(client, alice):
    client.force_login(alice)
    response = client.post(ADD, template_form(force_ca(), static_challenge_input=""))
    assert "needs its enrollment challenge password" in response.content.decode()
    assert CertificateTemplate.objects.count() == 0


def test_an_empty_challenge_field_keeps_the_stored_one_and_changes_are_diffed(client, alice):
    template = force_template(challenge_type="static", static_challenge="keep-me", validity_days=30)
    client.force_login(alice)
    form = template_form(
        template.ca,
        name=template.name,
        slug=template.slug,
        subject=template.subject,
        key_algorithm=template.key_algorithm,
        static_challenge_input="",
        validity_days="90",
        **{"san_rows-TOTAL_FORMS": "0"},
    )
    response = client.post(f"/admin/enrollment/certificatetemplate/{template.pk}/change/", form)
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.reveal_static_challenge() == "keep-me"
    event = history_for(template).get(action="update")
    assert event.changes["validity_days"] == [30, 90]
    assert "static_challenge" not in event.changes
    history = client.get(f"/admin/enrollment/certificatetemplate/{template.pk}/history/")
    assert "Modification history" in history.content.decode()
    assert "validity_days" in history.content.decode()


def test_bob_cannot_change_a_template(client, bob):
    template = force_template(validity_days=30)
    client.force_login(bob)
    form = template_form(template.ca, name=template.name, slug=template.slug, validity_days="1")
    response = client.post(f"/admin/enrollment/certificatetemplate/{template.pk}/change/", form)
    assert response.status_code == 403
    template.refresh_from_db()
    assert template.validity_days == 30
    assert not AuditEvent.objects.filter(action="update").exists()


def test_deleting_a_template_is_audited(client, alice):
    template = force_template()
    client.force_login(alice)
    response = client.post(
        f"/admin/enrollment/certificatetemplate/{template.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not CertificateTemplate.objects.filter(pk=template.pk).exists()
    event = AuditEvent.objects.get(action="delete")
    assert event.object_repr == template.name and event.changes["name"] == [template.name, None]


def test_a_template_that_issued_certificates_cannot_be_deleted(client, alice):
    template = force_certificate().template
    client.force_login(alice)
    url = f"/admin/enrollment/certificatetemplate/{template.pk}/delete/"
    page = client.get(url).content.decode()
    assert "1 certificate(s) issued from it" in page
    client.post(url, {"post": "yes"})
    assert CertificateTemplate.objects.filter(pk=template.pk).exists()
    assert not history_for(template).filter(action="delete").exists()


def test_a_single_file_ca_server_cannot_be_a_templates_ca(client, alice):
    single_file = force_ca()
    CertificateAuthority.objects.filter(pk=single_file.pk).update(kind=CAKind.SINGLE_FILE)
    client.force_login(alice)

    response = client.post(ADD, template_form(single_file))

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert CertificateTemplate.objects.count() == 0
