"""External SCEP CA servers in the console: adding one (GetCACert fetched and pinned, or
an uploaded certificate, an expected fingerprint checked) and "Test connection" against
micromdm's ``scepserver`` run as the external CA, through the admin with the test client.

Persona: alice is a superuser (``tests/conftest.py``)."""

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.pki import crypto
from apps.pki.models import CertificateAuthority
from tests import scepserver as scepserver_fixtures
from tests.factories import make_key, self_signed_ca
from tests.scepserver import external_ca_for, free_port

# The scepserver fixtures of tests/scepserver.py.
scepserver, start_scepserver = scepserver_fixtures.scepserver, scepserver_fixtures.start_scepserver
pytestmark = pytest.mark.django_db
ADD = "/admin/pki/certificateauthority/add/?mode=external"
CHANGELIST = "/admin/pki/certificateauthority/"


def external_form(url: str, **overrides) -> dict:
    return {
        "name": "Zylker NDES",
        "slug": "zylker-ndes",
        "description": "",
        "scep_url": url,
        "scep_challenge_type": "static",
        "static_challenge": "scep-secret",
        "ndes_challenge_url": "",
        "ndes_username": "",
        "ndes_password": "",
        "ndes_challenge_length": "16",
        "scep_retry_seconds": "10",
        "scep_max_pending_retries": "3",
        "scep_request_timeout_seconds": "5",
        "scep_allow_single_des": "on",
        "tls_trust_bundle_pem": "",
        "expected_fingerprint": "",
        **overrides,
    }


def test_alice_adds_an_external_ca_whose_certificate_is_fetched_and_pinned(
    client, alice, scepserver
):
    client.force_login(alice)
    fingerprint = crypto.fingerprint_sha256(scepserver.ca_certificate)

    response = client.post(
        ADD, external_form(scepserver.url, expected_fingerprint=crypto.colon_hex(fingerprint))
    )

    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(slug="zylker-ndes")
    assert (ca.kind, ca.fingerprint_sha256, ca.private_key) == ("scep", fingerprint, "")
    assert ca.reveal_secret("scep_static_challenge") == "scep-secret"
    assert "scep-secret" not in ca.scep_static_challenge
    event = AuditEvent.objects.get(action="create", object_id=str(ca.pk))
    assert "scep-secret" not in str(event.changes)
    page = client.get(f"{CHANGELIST}{ca.pk}/change/").content.decode()
    assert crypto.colon_hex(fingerprint) in page
    assert "scep-secret" not in page


def test_a_wrong_expected_fingerprint_is_a_form_error_and_nothing_is_saved(
    client, alice, scepserver
):
    client.force_login(alice)

    response = client.post(ADD, external_form(scepserver.url, expected_fingerprint="ab" * 32))

    assert response.status_code == 200
    assert "The CA certificate&#x27;s SHA-256 fingerprint is" in response.content.decode()
    assert not CertificateAuthority.objects.exists()


def test_an_unreachable_scep_url_is_a_form_error_and_nothing_is_saved(client, alice):
    client.force_login(alice)
    closed = f"http://127.0.0.1:{free_port()}/scep"

    response = client.post(ADD, external_form(closed))

    assert response.status_code == 200
    assert f"cannot reach {closed}" in response.content.decode()
    assert not CertificateAuthority.objects.exists()


def test_an_uploaded_ca_certificate_is_pinned_without_asking_the_server(client, alice):
    client.force_login(alice)
    certificate = self_signed_ca(make_key())
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    closed = f"http://127.0.0.1:{free_port()}/scep"
    form = external_form(closed, ca_certificate_file=SimpleUploadedFile("ca.pem", pem))

    response = client.post(ADD, form)

    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(slug="zylker-ndes")
    assert ca.fingerprint_sha256 == crypto.fingerprint_sha256(certificate)


def _test_connection(client, ca) -> str:
    response = client.post(CHANGELIST, {"action": "test_connection", "_selected_action": [ca.pk]})
    assert response.status_code == 200
    return response.content.decode()


def test_test_connection_shows_capabilities_chain_and_a_matching_fingerprint(
    client, alice, scepserver
):
    ca = external_ca_for(scepserver)
    client.force_login(alice)

    page = _test_connection(client, ca)

    assert "Capabilities (GetCACaps): Renewal, SHA-1, SHA-256, AES, DES3, SCEPStandard" in page
    assert "is presented: fingerprint matches" in page
    assert crypto.format_name(scepserver.ca_certificate.subject) in page
    assert crypto.fingerprint_sha256(scepserver.ca_certificate) in page


def test_test_connection_reports_a_fingerprint_mismatch(client, alice, scepserver, tmp_path):
    ca = external_ca_for(scepserver)
    other = self_signed_ca(make_key())
    ca.set_identity(other, None)
    ca.save()
    client.force_login(alice)

    page = _test_connection(client, ca)

    assert "Fingerprint mismatch: the pinned CA certificate" in page
    assert crypto.fingerprint_sha256(scepserver.ca_certificate) in page


def test_test_connection_to_an_unreachable_server_is_a_clear_error(client, alice, scepserver):
    ca = external_ca_for(scepserver)
    ca.scep_url = f"http://127.0.0.1:{free_port()}/scep"
    ca.save()
    client.force_login(alice)

    page = _test_connection(client, ca)

    assert f"Connection failed: CA server {ca.name}: cannot reach {ca.scep_url}" in page


def test_the_change_page_has_a_test_connection_button(client, alice, scepserver):
    ca = external_ca_for(scepserver)
    client.force_login(alice)
    url = f"{CHANGELIST}{ca.pk}/test-connection/"

    assert url in client.get(f"{CHANGELIST}{ca.pk}/change/").content.decode()
    assert "fingerprint matches" in client.get(url).content.decode()
