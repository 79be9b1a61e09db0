"""Staff API: CA servers (list, detail, CA certificate download); local CAs are
read-only. External SCEP CA servers, created and tested through the API, are in
``test_external_ca_servers``."""

import pytest
from cryptography import x509
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient

from apps.core.models import ApiToken
from apps.pki.models import CertificateAuthority
from tests.api.helpers import drf_datetime, token_client
from tests.factories import force_ca, force_user

LIST_URL = "/api/v1/ca-servers/"


def detail_url(ca: CertificateAuthority) -> str:
    return f"{LIST_URL}{ca.pk}/"


def download_url(ca: CertificateAuthority, query: str = "") -> str:
    return f"{LIST_URL}{ca.pk}/certificate/{query}"


def expected_ca(ca: CertificateAuthority) -> dict:
    return {
        "id": ca.pk,
        "name": ca.name,
        "slug": ca.slug,
        "description": "",
        "kind": "local",
        "parent": ca.parent_id,
        "subject": ca.subject,
        "serial": ca.serial,
        "fingerprint_sha256": ca.fingerprint_sha256,
        "not_before": drf_datetime(ca.not_before),
        "not_after": drf_datetime(ca.not_after),
        "key_algorithm": ca.key_algorithm,
        "signature_hash": "sha256",
        "path_length": ca.path_length,
        "has_private_key": True,
        "scep_url": "",
        "scep_challenge_type": "none",
        "has_static_challenge": False,
        "ndes_challenge_url": "",
        "ndes_username": "",
        "has_ndes_password": False,
        "ndes_challenge_length": 16,
        "scep_retry_seconds": 10,
        "scep_max_pending_retries": 3,
        "scep_request_timeout_seconds": 15,
        "scep_allow_single_des": False,
        "tls_trust_bundle_pem": "",
    }


@pytest.fixture
def root(db) -> CertificateAuthority:
    return force_ca(path_length=1)


@pytest.fixture
def intermediate(root) -> CertificateAuthority:
    return force_ca(parent=root, path_length=0)


def test_alice_lists_ca_servers_with_their_public_fields_only(api_as, alice, root, intermediate):
    response = api_as(alice).get(LIST_URL)

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": sorted(
            [expected_ca(root), expected_ca(intermediate)], key=lambda ca: ca["name"]
        ),
    }


def test_the_detail_of_an_intermediate_names_its_parent(api_as, alice, root, intermediate):
    response = api_as(alice).get(detail_url(intermediate))

    assert response.status_code == 200
    assert response.json() == expected_ca(intermediate)
    assert response.json()["parent"] == root.pk
    assert response.json()["path_length"] == 0


def test_it_downloads_the_ca_certificate_as_pem_by_default(api_as, alice, root):
    response = api_as(alice).get(download_url(root))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response["Content-Disposition"] == f'attachment; filename="{root.slug}.pem"'
    assert x509.load_pem_x509_certificate(response.content) == root.certificate
    assert response.content.decode() == root.certificate_pem


def test_it_downloads_the_ca_certificate_as_der(api_as, alice, root):
    response = api_as(alice).get(download_url(root, "?encoding=der"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-cert"
    assert response["Content-Disposition"] == f'attachment; filename="{root.slug}.cer"'
    assert x509.load_der_x509_certificate(response.content) == root.certificate


def test_the_download_ignores_an_accept_header_naming_the_certificate_type(api_as, alice, root):
    response = api_as(alice).get(
        download_url(root, "?encoding=der"), HTTP_ACCEPT="application/pkix-cert"
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(response.content) == root.certificate


def test_it_refuses_an_unknown_encoding(api_as, alice, root):
    response = api_as(alice).get(download_url(root, "?encoding=p12"))

    assert response.status_code == 400
    assert response.json() == {"encoding": ['"p12" is not a valid choice.']}


def test_the_download_of_a_missing_ca_is_a_json_404(api_as, alice, root):
    response = api_as(alice).get(
        f"{LIST_URL}{root.pk + 1000}/certificate/", HTTP_ACCEPT="application/pkix-cert"
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "No CertificateAuthority matches the given query."}


def test_no_response_contains_private_key_material(api_as, alice, root, intermediate):
    client = api_as(alice)
    stored = CertificateAuthority.objects.values_list("private_key", flat=True)
    assert all(key.startswith("mdmc1:") for key in stored)  # there is a secret to leak

    responses = [
        client.get(LIST_URL),
        client.get(detail_url(root)),
        client.get(detail_url(intermediate)),
        client.get(download_url(root)),
        client.get(download_url(intermediate, "?encoding=der")),
        client.options(detail_url(root)),
    ]

    assert [r.status_code for r in responses] == [200] * 6
    for response in responses:
        assert b"PRIVATE KEY" not in response.content
        assert b"mdmc1:" not in response.content
        assert b'"private_key"' not in response.content


def test_bob_with_view_permissions_can_read_ca_servers(api_as, bob, root):
    client = api_as(bob)

    assert client.get(LIST_URL).status_code == 200
    assert client.get(detail_url(root)).json() == expected_ca(root)
    assert client.get(download_url(root)).status_code == 200


def test_a_session_signed_in_staff_user_can_read_ca_servers(bob, root):
    client = APIClient()
    client.force_login(bob)

    assert client.get(detail_url(root)).json() == expected_ca(root)


def test_local_ca_servers_cannot_be_changed_or_deleted_through_the_api(api_as, alice, root):
    client = api_as(alice)
    before = CertificateAuthority.objects.get(pk=root.pk)

    responses = [
        client.patch(detail_url(root), {"name": "renamed"}, format="json"),
        client.put(detail_url(root), {"name": "renamed", "slug": "renamed"}, format="json"),
        client.delete(detail_url(root)),
    ]

    assert [r.status_code for r in responses] == [400, 400, 405]
    assert responses[0].json() == {
        "detail": "Only external SCEP CA servers can be changed through the API; local CAs "
        "are generated, imported and changed in the console."
    }
    after = CertificateAuthority.objects.get(pk=root.pk)
    assert (after.name, after.slug, after.updated_at) == (
        before.name,
        before.slug,
        before.updated_at,
    )
    assert CertificateAuthority.objects.count() == 1


def test_a_post_without_a_scep_url_creates_nothing(api_as, alice, root):
    response = api_as(alice).post(LIST_URL, {"name": "new", "slug": "new"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"scep_url": ["This field is required."]}
    assert CertificateAuthority.objects.count() == 1


def test_anonymous_is_asked_to_authenticate(anonymous, root):
    responses = [
        anonymous.get(LIST_URL),
        anonymous.get(detail_url(root)),
        anonymous.get(download_url(root)),
    ]

    assert [r.status_code for r in responses] == [401] * 3
    assert responses[0]["WWW-Authenticate"] == "Token"
    assert b"BEGIN CERTIFICATE" not in responses[2].content


def test_charlie_who_is_not_staff_is_refused(api_as, charlie, root):
    client = api_as(charlie)

    responses = [client.get(LIST_URL), client.get(detail_url(root)), client.get(download_url(root))]

    assert [r.status_code for r in responses] == [403] * 3
    assert responses[0].json() == {"detail": "You do not have permission to perform this action."}


def test_a_staff_user_without_the_view_permission_is_refused(api_as, root):
    dave = force_user("dave", is_staff=True)
    dave.user_permissions.set(Permission.objects.filter(codename="view_certificate"))

    response = api_as(dave).get(LIST_URL)

    assert response.status_code == 403


def test_a_wrong_token_is_refused_with_401(root):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(LIST_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked token."}


def test_a_revoked_token_is_refused_with_401(alice, root):
    client = token_client(alice)
    assert client.get(LIST_URL).status_code == 200
    ApiToken.objects.filter(user=alice).update(revoked_at=timezone.now())

    response = client.get(LIST_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked token."}


def test_the_token_of_a_deactivated_user_is_refused_with_401(alice, root):
    client = token_client(alice)
    alice.is_active = False
    alice.save()

    response = client.get(LIST_URL)

    assert response.status_code == 401
