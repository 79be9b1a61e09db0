"""Staff API: user-provided identities listed, uploaded on a user's behalf, deleted."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.certificates.choices import CertificateStatus, IdentityPurpose
from apps.certificates.models import Certificate, Identity
from apps.certificates.uploads import MAX_UPLOAD_BYTES, store_user_identity, user_identities
from tests.certificates.bundles import PASSWORD, bundle
from tests.factories import force_user

SIGNING = IdentityPurpose.SMIME_SIGNING


@pytest.fixture
def dave(db):
    return force_user("dave")


def upload(client, user, data: bytes, **fields):
    body = {"file": SimpleUploadedFile("dave.p12", data), "password": PASSWORD, **fields}
    body.setdefault("purpose", SIGNING)
    return client.post(f"/api/v1/users/{user.pk}/identities/", body, format="multipart")


def test_staff_upload_an_identity_for_a_user_and_get_no_secret_back(api_as, alice, dave):
    response = upload(api_as(alice), dave, bundle())

    assert response.status_code == 201
    identity = Identity.objects.get()
    assert response.json() == {
        "id": identity.pk,
        "user": dave.pk,
        "purpose": SIGNING,
        "certificate": {
            "id": identity.certificate.pk,
            "serial": identity.certificate.serial,
            "subject": identity.certificate.subject,
            "not_before": identity.certificate.not_before.isoformat().replace("+00:00", "Z"),
            "not_after": identity.certificate.not_after.isoformat().replace("+00:00", "Z"),
            "fingerprint_sha256": identity.certificate.fingerprint_sha256,
            "status": "active",
            "source": "user_provided",
        },
        "created_at": identity.created_at.isoformat().replace("+00:00", "Z"),
        "delivered_at": None,
    }
    assert PASSWORD not in response.content.decode()
    event = AuditEvent.objects.get(action="create", object_id=str(identity.certificate.pk))
    assert event.actor == alice


def test_a_wrong_password_is_a_400_with_the_message_and_stores_nothing(api_as, alice, dave):
    response = upload(api_as(alice), dave, bundle(), password="wrong")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The password is not right for this file.")
    assert (Identity.objects.count(), Certificate.objects.count()) == (0, 0)


def test_a_file_over_100_kb_is_refused(api_as, alice, dave):
    response = upload(api_as(alice), dave, b"\x30" * (MAX_UPLOAD_BYTES + 1))

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "The file is 100 KB; at most 100 KB is accepted. Export only your certificate, its "
        "private key and its issuers."
    )
    assert Identity.objects.count() == 0


def test_an_unknown_purpose_is_a_400(api_as, alice, dave):
    response = upload(api_as(alice), dave, bundle(), purpose="wifi")

    assert response.status_code == 400
    assert response.json() == {"purpose": ['"wifi" is not a valid choice.']}
    assert Identity.objects.count() == 0


def test_replacing_needs_replace_true_then_retires_the_old_one(api_as, alice, dave):
    client = api_as(alice)
    first = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    refused = upload(client, dave, bundle())
    assert refused.status_code == 409
    assert refused.json()["existing"] == first.pk
    assert list(user_identities(dave)) == [first]

    replaced = upload(client, dave, bundle(), replace="true")
    assert replaced.status_code == 201
    assert [i.pk for i in user_identities(dave)] == [replaced.json()["id"]]


def test_list_a_users_identities(api_as, bob, dave, charlie):
    mine = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)
    store_user_identity(user=charlie, purpose=SIGNING, data=bundle(), password=PASSWORD)

    response = api_as(bob).get(f"/api/v1/users/{dave.pk}/identities/")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [mine.pk]


def test_delete_an_identity(api_as, alice, dave):
    identity = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    response = api_as(alice).delete(f"/api/v1/identities/{identity.pk}/")

    assert response.status_code == 204
    identity.refresh_from_db()
    assert (identity.current, identity.private_key) == (False, "")
    assert Certificate.objects.get().status == CertificateStatus.REMOVED


def test_view_only_staff_can_neither_upload_nor_delete(api_as, bob, dave):
    identity = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)
    client = api_as(bob)

    assert upload(client, dave, bundle(), replace="true").status_code == 403
    assert client.delete(f"/api/v1/identities/{identity.pk}/").status_code == 403
    assert list(user_identities(dave)) == [identity]
    assert Certificate.objects.count() == 1


def test_non_staff_and_anonymous_are_refused(api_as, anonymous, charlie, dave):
    assert upload(api_as(charlie), dave, bundle()).status_code == 403
    assert upload(anonymous, dave, bundle()).status_code in (401, 403)
    assert Identity.objects.count() == 0


def test_an_unknown_user_is_a_404(api_as, alice):
    response = api_as(alice).get("/api/v1/users/999999/identities/")

    assert response.status_code == 404
