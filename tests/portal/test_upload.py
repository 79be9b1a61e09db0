"""Uploading a personal certificate: the happy path, every refusal shown on the form
with nothing stored, replacing the current upload after a confirmation (the file held
encrypted meanwhile), and deleting an upload."""

import base64
import datetime
import json
import os

import pytest
import time_machine
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, Identity
from apps.certificates.uploads import UploadRejected, validate_pkcs12
from apps.portal import services
from apps.portal.services import PENDING_UPLOAD_KEY, PENDING_UPLOAD_TTL
from tests.portal.bundles import P12_PASSWORD, make_p12, subject_of
from tests.portal.conftest import p12_file

pytestmark = pytest.mark.django_db

UPLOAD = "/portal/upload/"
CONFIRM = "/portal/upload/confirm/"


def post_upload(client, data: bytes, *, purpose="smime_signing", password=P12_PASSWORD):
    return client.post(UPLOAD, {"purpose": purpose, "password": password, "file": p12_file(data)})


def stored() -> tuple[int, int, int]:
    return Identity.objects.count(), Certificate.objects.count(), AuditEvent.objects.count()


def test_the_upload_form_preselects_the_purpose_a_link_asks_for(alice_client):
    response = alice_client.get(f"{UPLOAD}?purpose=smime_encryption")

    assert response.status_code == 200
    assert response.context["form"]["purpose"].value() == "smime_encryption"
    page = response.content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert 'accept=".p12,.pfx,application/x-pkcs12"' in page


def test_alice_uploads_her_signing_certificate(alice, alice_client):
    p12 = make_p12()

    response = post_upload(alice_client, p12)

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:certificates")
    identity = Identity.objects.get()
    assert (identity.user, identity.purpose, identity.current) == (alice, "smime_signing", True)
    assert (identity.certificate.source, identity.certificate.subject) == (
        "user_provided",
        subject_of(p12),
    )
    event = AuditEvent.objects.get(action="create")
    assert (event.actor, event.object_id) == (alice, str(identity.certificate.pk))
    assert P12_PASSWORD not in str(event.changes) + event.message
    listed = alice_client.get(reverse("portal:certificates"))
    assert [i.pk for i in listed.context["uploads"]] == [identity.pk]
    page = listed.content.decode()
    assert "S/MIME signing certificate is uploaded" in page
    assert escape(identity.certificate.subject) in page
    assert PENDING_UPLOAD_KEY not in alice_client.session


def oversized() -> bytes:
    return os.urandom(150 * 1024)


# (what is wrong, the file, the password typed)
REFUSALS = {
    "wrong password": (lambda: make_p12(), "not-the-password"),
    "PEM, not PKCS#12": (lambda: b"-----BEGIN CERTIFICATE-----\nMIIB\n", P12_PASSWORD),
    "not a certificate at all": (lambda: b"%PDF-1.7 a document", P12_PASSWORD),
    "no private key": (lambda: make_p12(with_key=False), P12_PASSWORD),
    "key of another certificate": (lambda: make_p12(foreign_key=True), P12_PASSWORD),
    "expired": (lambda: make_p12(not_before_days=-400, days=30), P12_PASSWORD),
    "not valid yet": (lambda: make_p12(not_before_days=5), P12_PASSWORD),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal_is_shown_on_the_form_and_nothing_is_stored(alice_client, case):
    make, password = REFUSALS[case]
    data = make()
    with pytest.raises(UploadRejected) as expected:
        validate_pkcs12(data=data, password=password)
    before = stored()

    response = post_upload(alice_client, data, password=password)

    assert response.status_code == 400
    errors = response.context["form"].non_field_errors()
    assert errors == [expected.value.message]
    assert escape(expected.value.message) in response.content.decode()
    assert stored() == before


def test_a_file_over_100_kb_is_refused_before_it_is_read(alice_client):
    before = stored()

    response = post_upload(alice_client, oversized())

    assert response.status_code == 400
    assert response.context["form"].errors["file"] == [
        "The file is 150 KB; at most 100 KB is accepted. Export only your certificate, "
        "its private key and its issuers."
    ]
    assert stored() == before


def test_a_purpose_not_offered_is_refused(alice_client):
    before = stored()

    response = post_upload(alice_client, make_p12(), purpose="code_signing")

    assert response.status_code == 400
    assert response.context["form"].errors["purpose"] == [
        "Select a valid choice. code_signing is not one of the available choices."
    ]
    assert stored() == before


def test_no_file_is_asked_for(alice_client):
    response = alice_client.post(UPLOAD, {"purpose": "identity", "password": P12_PASSWORD})

    assert response.status_code == 400
    assert response.context["form"].errors["file"] == ["This field is required."]


# --- replacing ------------------------------------------------------------------------------


def session_data(client) -> dict:
    """What the session table holds for ``client`` (signed, not encrypted: readable)."""
    return Session.objects.get(session_key=client.session.session_key).get_decoded()


def test_a_second_upload_for_a_purpose_asks_for_confirmation_first(alice_client, alice_upload):
    p12 = make_p12(email="alice.new@zylker.com")
    before = stored()

    response = post_upload(alice_client, p12)

    assert response.status_code == 302
    assert response["Location"] == CONFIRM
    assert stored() == before
    assert Identity.objects.get(current=True) == alice_upload
    page = alice_client.get(CONFIRM)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Replace your S/MIME signing certificate?" in html
    assert escape(alice_upload.certificate.subject) in html
    assert escape(subject_of(p12)) in html


def test_the_held_upload_is_encrypted_in_the_session(alice_client, alice_upload):
    p12 = make_p12(email="alice.new@zylker.com")

    post_upload(alice_client, p12)

    held = json.dumps(session_data(alice_client))
    assert P12_PASSWORD not in held
    assert base64.b64encode(p12).decode()[:64] not in held
    assert base64.urlsafe_b64encode(p12).decode()[:64] not in held
    assert session_data(alice_client)[PENDING_UPLOAD_KEY]["sealed"].startswith("mdmc1:")


def test_confirming_replaces_the_current_upload(alice, alice_client, alice_upload):
    p12 = make_p12(email="alice.new@zylker.com")
    post_upload(alice_client, p12)

    response = alice_client.post(CONFIRM, {"decision": "replace"})

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:certificates")
    new = Identity.objects.get(current=True)
    assert (new.user, new.purpose, new.certificate.subject) == (
        alice,
        "smime_signing",
        subject_of(p12),
    )
    alice_upload.refresh_from_db()
    assert (alice_upload.current, alice_upload.certificate.status) == (False, "removed")
    assert PENDING_UPLOAD_KEY not in session_data(alice_client)
    listed = alice_client.get(reverse("portal:certificates")).content.decode()
    assert "The previous one is retired." in listed


def test_keeping_the_current_upload_changes_nothing(alice_client, alice_upload):
    post_upload(alice_client, make_p12(email="alice.new@zylker.com"))
    before = stored()

    response = alice_client.post(CONFIRM, {"decision": "keep"})

    assert response.status_code == 302
    assert stored() == before
    assert Identity.objects.get(current=True) == alice_upload
    assert PENDING_UPLOAD_KEY not in session_data(alice_client)


def test_a_held_upload_expires(alice_client, alice_upload):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        post_upload(alice_client, make_p12(email="alice.new@zylker.com"))
    before = stored()

    with time_machine.travel(start + PENDING_UPLOAD_TTL + datetime.timedelta(seconds=1)):
        response = alice_client.post(CONFIRM, {"decision": "replace"})

    assert response.status_code == 302
    assert response["Location"] == UPLOAD
    assert stored() == before
    assert PENDING_UPLOAD_KEY not in session_data(alice_client)
    page = alice_client.get(UPLOAD).content.decode()
    assert "There is no upload waiting for confirmation (it may have expired)" in page


def test_an_upload_for_another_purpose_needs_no_confirmation(alice_client, alice_upload):
    response = post_upload(alice_client, make_p12(email="a2@zylker.com"), purpose="identity")

    assert response["Location"] == reverse("portal:certificates")
    assert sorted(Identity.objects.filter(current=True).values_list("purpose", flat=True)) == [
        "identity",
        "smime_signing",
    ]


# --- deleting ------------------------------------------------------------------------------


def test_deleting_asks_first(alice_client, alice_upload):
    response = alice_client.get(reverse("portal:upload-delete", args=[alice_upload.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Delete your S/MIME signing certificate?" in page
    assert escape(alice_upload.certificate.subject) in page
    alice_upload.refresh_from_db()
    assert alice_upload.current is True


def test_alice_deletes_her_upload(alice, alice_client, alice_upload):
    response = alice_client.post(reverse("portal:upload-delete", args=[alice_upload.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:certificates")
    alice_upload.refresh_from_db()
    assert (alice_upload.current, alice_upload.private_key) == (False, "")
    assert alice_upload.certificate.status == "removed"
    listed = alice_client.get(reverse("portal:certificates"))
    assert list(listed.context["uploads"]) == []
    assert "Your S/MIME signing certificate is deleted." in listed.content.decode()
    event = AuditEvent.objects.filter(action="delete").get()
    assert (event.actor, event.object_id) == (alice, str(alice_upload.certificate.pk))


def test_a_deleted_upload_cannot_be_deleted_again(alice_client, alice_upload):
    url = reverse("portal:upload-delete", args=[alice_upload.pk])
    alice_client.post(url)

    assert alice_client.post(url).status_code == 404


def test_a_held_upload_opens_only_for_the_user_who_uploaded_it(alice, bob):
    session = SessionStore()
    p12 = make_p12()
    services.hold_pending_upload(
        session=session,
        user=alice,
        purpose="identity",
        filename="alice.p12",
        data=p12,
        password=P12_PASSWORD,
    )
    copied = SessionStore()
    copied[PENDING_UPLOAD_KEY] = session[PENDING_UPLOAD_KEY]

    assert services.take_pending_upload(session=copied, user=bob) is None
    mine = services.take_pending_upload(session=session, user=alice)
    assert (mine.data, mine.password, mine.purpose) == (p12, P12_PASSWORD, "identity")
