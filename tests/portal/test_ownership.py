"""The ownership matrix: alice sees and downloads her own certificates and uploads; bob
gets 404 for every one of them (so ids reveal nothing); anonymous is sent to sign-in from
every page; a forged POST (no CSRF token) is refused and changes nothing."""

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, Identity
from apps.portal.services import PENDING_UPLOAD_KEY
from tests.factories import force_user
from tests.portal.bundles import P12_PASSWORD, make_p12
from tests.portal.conftest import ALICE_PASSWORD, p12_file, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_things(alice_certificate, alice_device_certificate, alice_upload):
    return {
        "certificate": alice_certificate,
        "device_certificate": alice_device_certificate,
        "upload": alice_upload,
    }


def page_urls(things) -> list[str]:
    return [
        reverse("portal:home"),
        reverse("portal:devices"),
        reverse("portal:certificates"),
        reverse("portal:upload"),
        reverse("portal:upload-confirm"),
        reverse("portal:password-change"),
        reverse("portal:certificate-download", args=[things["certificate"].pk]),
        reverse("portal:certificate-download", args=[things["device_certificate"].pk]),
        reverse("portal:upload-delete", args=[things["upload"].pk]),
    ]


def test_anonymous_is_sent_to_sign_in_from_every_page(client, alices_things):
    for url in page_urls(alices_things):
        response = client.get(url)

        assert response.status_code == 302, url
        assert response["Location"] == f"{reverse('portal:sign-in')}?next={url}"


def test_anonymous_posts_are_sent_to_sign_in_and_change_nothing(client, alices_things):
    upload = alices_things["upload"]
    events = AuditEvent.objects.count()

    deleted = client.post(reverse("portal:upload-delete", args=[upload.pk]))
    uploaded = client.post(
        reverse("portal:upload"),
        {"purpose": "identity", "password": P12_PASSWORD, "file": p12_file(make_p12())},
    )

    assert (deleted.status_code, uploaded.status_code) == (302, 302)
    assert deleted["Location"].startswith(reverse("portal:sign-in"))
    upload.refresh_from_db()
    assert upload.current is True
    assert Identity.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_alice_sees_her_certificates_and_uploads(alice_client, alices_things):
    response = alice_client.get(reverse("portal:certificates"))

    assert response.status_code == 200
    shown = [c.pk for c in response.context["certificates"]]
    assert sorted(shown) == sorted(
        [
            alices_things["certificate"].pk,
            alices_things["device_certificate"].pk,
            alices_things["upload"].certificate.pk,
        ]
    )
    assert [i.pk for i in response.context["uploads"]] == [alices_things["upload"].pk]


def test_alice_downloads_the_public_certificate_of_her_own(alice_client, alices_things):
    for cert in (alices_things["device_certificate"], alices_things["upload"].certificate):
        response = alice_client.get(reverse("portal:certificate-download", args=[cert.pk]))

        assert response.status_code == 200
        assert response["Content-Type"] == "application/x-pem-file"
        assert response["Content-Disposition"] == f'attachment; filename="{cert.serial}.pem"'
        assert response.content.decode() == cert.certificate_pem
        assert b"PRIVATE KEY" not in response.content


def test_bob_sees_nothing_of_alice(bob_client, bob_certificate, alices_things):
    response = bob_client.get(reverse("portal:certificates"))

    assert [c.pk for c in response.context["certificates"]] == [bob_certificate.pk]
    assert list(response.context["uploads"]) == []
    page = response.content.decode()
    for cert in Certificate.objects.exclude(pk=bob_certificate.pk):
        assert cert.subject not in page
        assert cert.serial_colon_hex not in page


def test_bob_gets_404_for_every_one_of_alices_ids(bob_client, alices_things):
    urls = [
        reverse("portal:certificate-download", args=[alices_things["certificate"].pk]),
        reverse("portal:certificate-download", args=[alices_things["device_certificate"].pk]),
        reverse("portal:certificate-download", args=[alices_things["upload"].certificate.pk]),
        reverse("portal:upload-delete", args=[alices_things["upload"].pk]),
    ]

    for url in urls:
        assert bob_client.get(url).status_code == 404, url


def test_bob_cannot_delete_alices_upload(bob_client, alices_things):
    upload = alices_things["upload"]
    events = AuditEvent.objects.count()

    response = bob_client.post(reverse("portal:upload-delete", args=[upload.pk]))

    assert response.status_code == 404
    upload.refresh_from_db()
    assert (upload.current, upload.certificate.status) == (True, "active")
    assert upload.private_key != ""
    assert AuditEvent.objects.count() == events


def test_an_unknown_id_is_404_like_someone_elses(alice_client, alices_things):
    missing = Certificate.objects.order_by("-pk").first().pk + 1000

    response = alice_client.get(reverse("portal:certificate-download", args=[missing]))

    assert response.status_code == 404


def test_a_staff_member_sees_only_their_own_in_the_portal(alices_things, db):
    staff = force_user("sam", is_staff=True, is_superuser=True)

    response = signed_in(staff).get(reverse("portal:certificates"))
    download = signed_in(staff).get(
        reverse("portal:certificate-download", args=[alices_things["certificate"].pk])
    )

    assert list(response.context["certificates"]) == []
    assert download.status_code == 404


# --- forged requests: no CSRF token -------------------------------------------------------


@pytest.fixture
def forger(alice):
    """alice's browser, made to post by another site: signed in, but without the token."""
    return signed_in(alice, enforce_csrf_checks=True)


def test_a_forged_upload_is_refused_and_stores_nothing(forger, alices_things):
    before = (Identity.objects.count(), AuditEvent.objects.count())

    response = forger.post(
        reverse("portal:upload"),
        {"purpose": "identity", "password": P12_PASSWORD, "file": p12_file(make_p12())},
    )

    assert response.status_code == 403
    assert "This form could not be sent" in response.content.decode()
    assert (Identity.objects.count(), AuditEvent.objects.count()) == before


def test_a_forged_delete_is_refused_and_deletes_nothing(forger, alices_things):
    upload = alices_things["upload"]
    events = AuditEvent.objects.count()

    response = forger.post(reverse("portal:upload-delete", args=[upload.pk]))

    assert response.status_code == 403
    upload.refresh_from_db()
    assert (upload.current, upload.certificate.status) == (True, "active")
    assert AuditEvent.objects.count() == events


def test_a_forged_replace_confirmation_is_refused_and_replaces_nothing(alice, alices_things):
    # alice has an upload waiting for confirmation (made through her real browser) ...
    browser = signed_in(alice)
    browser.post(
        reverse("portal:upload"),
        {"purpose": "smime_signing", "password": P12_PASSWORD, "file": p12_file(make_p12())},
    )
    assert PENDING_UPLOAD_KEY in browser.session
    # ... and another site makes her browser confirm it.
    forged = signed_in(alice, enforce_csrf_checks=True)
    forged.cookies = browser.cookies

    response = forged.post(reverse("portal:upload-confirm"), {"decision": "replace"})

    assert response.status_code == 403
    assert Identity.objects.get(current=True, user=alice) == alices_things["upload"]
    assert Identity.objects.count() == 1


def test_a_forged_password_change_is_refused_and_changes_nothing(forger, alice):
    response = forger.post(
        reverse("portal:password-change"),
        {
            "old_password": ALICE_PASSWORD,
            "new_password1": "Forged-Passw0rd-9",
            "new_password2": "Forged-Passw0rd-9",
        },
    )

    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.check_password(ALICE_PASSWORD)


def test_a_forged_sign_out_is_refused_and_the_session_stays(forger):
    response = forger.post(reverse("portal:sign-out"))

    assert response.status_code == 403
    assert forger.get(reverse("portal:certificates")).status_code == 200


def test_a_forged_sign_in_is_refused(alice):
    browser = signed_in(alice, enforce_csrf_checks=True)
    browser.logout()

    response = browser.post(
        reverse("portal:sign-in"), {"username": "alice", "password": ALICE_PASSWORD}
    )

    assert response.status_code == 403
    assert "_auth_user_id" not in browser.session
