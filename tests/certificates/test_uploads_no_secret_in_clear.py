"""No uploaded key, password or PKCS#12 in clear in the database, its dump, the logs, the
audit trail, the admin or the API: user-provided and single-file identities, uploaded
through the staff API and the console."""

import base64
import io
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from apps.certificates.models import Identity
from tests.api.helpers import token_client
from tests.certificates.bundles import bundle, user_certificate
from tests.core.test_no_key_in_clear import database_dump, forms_of
from tests.factories import force_user, make_key

pytestmark = pytest.mark.django_db
UPLOAD_PASSWORD = "upload-pw-Xq7!"
SHARED_PASSWORD = "shared-pw-Kd3!"


def key_der(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_uploaded_keys_passwords_and_files_are_nowhere_in_clear(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    dave = force_user("dave")
    own_key, shared_key = make_key("rsa2048"), make_key("ec-p256")
    own = bundle(own_key, user_certificate(own_key), password=UPLOAD_PASSWORD)
    shared = bundle(shared_key, user_certificate(shared_key), password=SHARED_PASSWORD)
    api = token_client(alice)
    answer = api.post(
        f"/api/v1/users/{dave.pk}/identities/",
        {"file": SimpleUploadedFile("d.p12", own), "password": UPLOAD_PASSWORD,
         "purpose": "smime_signing"},
        format="multipart",
    )  # fmt: skip
    assert answer.status_code == 201
    client.force_login(alice)
    added = client.post(
        "/admin/pki/certificateauthority/add/?mode=single_file",
        {"name": "Shared", "slug": "shared", "password": SHARED_PASSWORD,
         "identity_file": SimpleUploadedFile("s.p12", shared)},
    )  # fmt: skip
    assert added.status_code == 302
    identities = list(Identity.objects.select_related("certificate"))
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    pages = b"".join(
        client.get(url).content
        for url in [
            "/admin/certificates/identity/",
            *(f"/admin/certificates/identity/{i.pk}/change/" for i in identities),
            *(f"/admin/certificates/certificate/{i.certificate_id}/change/" for i in identities),
            "/admin/pki/certificateauthority/",
            "/admin/audit/auditevent/",
        ]
    )
    api_pages = b"".join(
        api.get(url).content
        for url in (f"/api/v1/users/{dave.pk}/identities/", "/api/v1/identities/")
    )
    places = {
        "database": database_dump(),
        "dumpdata": out.getvalue().encode(),
        "logs": caplog.text.encode(),
        "admin": pages,
        "api": answer.content + api_pages,
    }
    for where, blob in places.items():
        assert b"PRIVATE KEY" not in blob, where
        for password in (UPLOAD_PASSWORD, SHARED_PASSWORD):
            assert password.encode() not in blob, where
        for data in (own, shared):
            assert base64.b64encode(data)[:64] not in blob and data[:64] not in blob, where
        for key in (own_key, shared_key):
            for form in forms_of(key_der(key)):
                assert form not in blob, where
    # The check can fail: both keys are there, encrypted.
    assert [i.private_key[:6] for i in identities] == ["mdmc1:", "mdmc1:"]
