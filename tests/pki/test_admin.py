"""CA servers in the console, driven with the Django test client."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.services import history_for, secret_marker
from apps.pki.models import CertificateAuthority
from tests.factories import force_ca, make_key, self_signed_ca

pytestmark = pytest.mark.django_db
ADD = "/admin/pki/certificateauthority/add/"


def generate_form(**overrides) -> dict:
    return {
        "name": "Zylker Root",
        "slug": "zylker-root",
        "description": "",
        "subject_dn": "C=US,O=Zylker,CN=Zylker Root",
        "key_algorithm": "ec-p256",
        "signature_hash": "sha256",
        "validity_years": "10",
        "path_length": "1",
        "parent": "",
        **overrides,
    }


def test_alice_generates_a_root_ca_in_the_console(client, alice):
    client.force_login(alice)
    assert "Generate a CA" in client.get(ADD + "?mode=generate").content.decode()
    response = client.post(ADD + "?mode=generate", generate_form())
    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(slug="zylker-root")
    assert ca.subject == "C=US,O=Zylker,CN=Zylker Root" and ca.path_length == 1
    event = history_for(ca).get(action="create")
    assert event.actor == alice and event.source_ip == "127.0.0.1"
    assert event.changes["private_key"] == [None, secret_marker(ca.private_key)]
    assert event.changes["private_key"][1].startswith("(secret ")


def test_alice_generates_an_intermediate_under_a_local_ca(client, alice):
    root = force_ca(path_length=1)
    client.force_login(alice)
    client.post(
        ADD,
        generate_form(
            name="Issuing",
            slug="issuing",
            parent=root.pk,
            path_length="0",
            subject_dn="O=Zylker,CN=Issuing",
        ),
    )
    assert CertificateAuthority.objects.get(slug="issuing").parent == root


def test_a_bad_subject_is_a_form_error_and_creates_nothing(client, alice):
    client.force_login(alice)
    response = client.post(ADD, generate_form(subject_dn="XX=nope"))
    assert response.status_code == 200
    assert "unknown attribute" in response.content.decode()
    assert CertificateAuthority.objects.count() == 0


def test_alice_imports_a_ca_from_pkcs12_and_the_password_is_not_kept(client, alice):
    key = make_key("ec-p256")
    cert = self_signed_ca(key)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(b"import-pw")
    )
    client.force_login(alice)
    page = client.get(ADD + "?mode=import").content.decode()
    assert 'enctype="multipart/form-data"' in page
    response = client.post(
        ADD + "?mode=import",
        {
            "name": "Imported",
            "slug": "imported",
            "signature_hash": "sha256",
            "password": "import-pw",
            "identity_file": SimpleUploadedFile("ca.p12", p12),
        },
    )
    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(slug="imported")
    assert ca.certificate == cert
    assert "import-pw" not in str(list(history_for(ca).values()))


def test_a_wrong_import_password_is_a_form_error(client, alice):
    key = make_key("ec-p256")
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", key, self_signed_ca(key), None, serialization.BestAvailableEncryption(b"right")
    )
    client.force_login(alice)
    response = client.post(
        ADD + "?mode=import",
        {
            "name": "Imported",
            "slug": "imported",
            "signature_hash": "sha256",
            "password": "wrong",
            "identity_file": SimpleUploadedFile("ca.p12", p12),
        },
    )
    assert response.status_code == 200
    assert "the password is wrong" in response.content.decode()
    assert 'value="wrong"' not in response.content.decode()
    assert CertificateAuthority.objects.count() == 0


def test_the_ca_list_shows_the_ca_and_downloads_its_certificate(client, bob):
    ca = force_ca()
    client.force_login(bob)
    page = client.get("/admin/pki/certificateauthority/").content.decode()
    assert ca.subject in page and ca.fingerprint_sha256[:2].upper() in page
    pem = client.get(f"/admin/pki/certificateauthority/{ca.pk}/download/pem/")
    assert pem["Content-Type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(pem.content) == ca.certificate
    der = client.get(f"/admin/pki/certificateauthority/{ca.pk}/download/der/")
    assert x509.load_der_x509_certificate(der.content) == ca.certificate


def test_the_change_page_never_shows_key_material(client, alice):
    ca = force_ca()
    client.force_login(alice)
    page = client.get(f"/admin/pki/certificateauthority/{ca.pk}/change/").content.decode()
    assert "stored encrypted under the KEK" in page
    assert "mdmc1:" not in page and "PRIVATE KEY" not in page


def test_bob_may_look_but_not_generate(client, bob):
    client.force_login(bob)
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, generate_form()).status_code == 403
    assert CertificateAuthority.objects.count() == 0


@pytest.mark.parametrize("persona", [None, "charlie"])
def test_anonymous_and_non_staff_users_are_sent_to_sign_in(client, persona, request):
    if persona:
        client.force_login(request.getfixturevalue(persona))
    ca = force_ca()
    for response in (
        client.post(ADD, generate_form()),
        client.get(f"/admin/pki/certificateauthority/{ca.pk}/download/pem/"),
    ):
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert CertificateAuthority.objects.count() == 1
