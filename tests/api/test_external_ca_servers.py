"""Staff API: external SCEP CA servers, created and changed with their CA certificate
fetched from micromdm's ``scepserver`` (run by the test as the external CA) or given as
PEM, and "Test connection" (``POST /api/v1/ca-servers/<id>/test-connection/``).

Personas: alice is a superuser, bob a staff member with the view permissions only,
charlie no staff member (``tests/conftest.py``)."""

import json

import pytest
from cryptography.hazmat.primitives import serialization

from apps.audit.models import AuditEvent
from apps.pki import crypto
from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.models import CertificateAuthority
from tests import scepserver as scepserver_fixtures
from tests.factories import force_ca, make_key, self_signed_ca
from tests.scepserver import external_ca_for
from tests.subprocesses import free_port

# The scepserver fixtures of tests/scepserver.py.
scepserver, start_scepserver = scepserver_fixtures.scepserver, scepserver_fixtures.start_scepserver
pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/ca-servers/"
STATIC = "dc1-global-enrollment-code"
NDES_PASSWORD = "ndes-account-password-7"


def detail_url(ca: CertificateAuthority) -> str:
    return f"{LIST_URL}{ca.pk}/"


def connection_url(ca: CertificateAuthority) -> str:
    return f"{LIST_URL}{ca.pk}/test-connection/"


def new_ca(url: str, **overrides) -> dict:
    return {
        "name": "DigiCert ONE",
        "slug": "digicert-one",
        "description": "Zylker's issuing CA at DigiCert ONE",
        "scep_url": url,
        "scep_challenge_type": "static",
        "static_challenge": STATIC,
        "scep_request_timeout_seconds": 5,
        "scep_allow_single_des": True,
        **overrides,
    }


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/scep"


def pem_of(*certificates) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def test_alice_adds_an_external_ca_whose_certificate_is_fetched_and_pinned(
    api_as, alice, scepserver
):
    fingerprint = crypto.fingerprint_sha256(scepserver.ca_certificate)
    body = new_ca(scepserver.url, expected_fingerprint=crypto.colon_hex(fingerprint).upper())

    response = api_as(alice).post(LIST_URL, body, format="json")

    assert response.status_code == 201, response.content
    ca = CertificateAuthority.objects.get(slug="digicert-one")
    assert response.json() == {
        "id": ca.pk,
        "name": "DigiCert ONE",
        "slug": "digicert-one",
        "description": "Zylker's issuing CA at DigiCert ONE",
        "kind": "scep",
        "parent": None,
        "subject": crypto.format_name(scepserver.ca_certificate.subject),
        "serial": crypto.serial_hex(scepserver.ca_certificate),
        "fingerprint_sha256": fingerprint,
        "not_before": ca.not_before.isoformat().replace("+00:00", "Z"),
        "not_after": ca.not_after.isoformat().replace("+00:00", "Z"),
        "key_algorithm": "rsa2048",
        "signature_hash": "sha256",
        "path_length": ca.path_length,
        "has_private_key": False,
        "scep_url": scepserver.url,
        "scep_challenge_type": "static",
        "has_static_challenge": True,
        "ndes_challenge_url": "",
        "ndes_username": "",
        "has_ndes_password": False,
        "ndes_challenge_length": 16,
        "scep_retry_seconds": 10,
        "scep_max_pending_retries": 3,
        "scep_request_timeout_seconds": 5,
        "scep_allow_single_des": True,
        "tls_trust_bundle_pem": "",
    }
    assert (ca.kind, ca.certificate, ca.private_key) == ("scep", scepserver.ca_certificate, "")
    assert ca.reveal_secret("scep_static_challenge") == STATIC
    assert STATIC not in ca.scep_static_challenge
    event = AuditEvent.objects.get(action="create", object_id=str(ca.pk))
    assert event.actor == alice
    assert STATIC not in json.dumps(event.changes)


def test_a_wrong_expected_fingerprint_is_a_400_and_nothing_is_stored(api_as, alice, scepserver):
    found = crypto.colon_hex(crypto.fingerprint_sha256(scepserver.ca_certificate))

    response = api_as(alice).post(
        LIST_URL, new_ca(scepserver.url, expected_fingerprint="ab" * 32), format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "expected_fingerprint": [
            f"The CA certificate's SHA-256 fingerprint is {found}, not the expected "
            f"{crypto.colon_hex('ab' * 32)}."
        ]
    }
    assert not CertificateAuthority.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_unreachable_scep_url_is_a_400_and_nothing_is_stored(api_as, alice):
    url = closed_url()

    response = api_as(alice).post(LIST_URL, new_ca(url), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "scep_url": [
            f"CA certificate not fetched: CA server DigiCert ONE: cannot reach {url}: "
            "Connection refused"
        ]
    }
    assert not CertificateAuthority.objects.exists()


def test_a_ca_certificate_given_as_pem_is_pinned_without_asking_the_server(api_as, alice):
    issuing = self_signed_ca(make_key())
    expected = crypto.fingerprint_sha256(issuing)
    body = new_ca(closed_url(), ca_certificate_pem=pem_of(issuing), expected_fingerprint=expected)

    response = api_as(alice).post(LIST_URL, body, format="json")

    assert response.status_code == 201, response.content
    ca = CertificateAuthority.objects.get()
    assert (ca.fingerprint_sha256, ca.chain_pem) == (expected, "")
    assert response.json()["fingerprint_sha256"] == expected


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"ca_certificate_pem": "not a certificate"}, {"ca_certificate_pem": ["no PEM"]}),
        ({"static_challenge": ""}, {"static_challenge": ["static"]}),
        (
            {"scep_challenge_type": "dynamic"},
            {"ndes_challenge_url": ["NDES"], "ndes_username": ["NDES"], "ndes_password": ["NDES"]},
        ),
        ({"scep_url": "ftp://ca.zylker.com/scep"}, {"scep_url": ["http or https"]}),
        ({"tls_trust_bundle_pem": "garbage"}, {"tls_trust_bundle_pem": ["TLS trust bundle"]}),
        ({"expected_fingerprint": "12:34"}, {"expected_fingerprint": ["64 hexadecimal"]}),
    ],
)
def test_bad_settings_are_a_400_that_names_the_field(api_as, alice, overrides, errors):
    pem = pem_of(self_signed_ca(make_key()))
    body = new_ca(closed_url(), **{"ca_certificate_pem": pem, **overrides})

    response = api_as(alice).post(LIST_URL, body, format="json")

    assert response.status_code == 400
    answer = response.json()
    assert sorted(answer) == sorted(errors)
    for field, (fragment,) in errors.items():
        (message,) = answer[field]
        assert fragment in message, message
    assert not CertificateAuthority.objects.exists()


def test_secrets_are_never_in_any_response(api_as, alice, bob):
    pem = pem_of(self_signed_ca(make_key()))
    body = new_ca(
        closed_url(),
        ca_certificate_pem=pem,
        scep_challenge_type="dynamic",
        ndes_challenge_url="https://ndes.zylker.com/certsrv/mscep_admin/",
        ndes_username="ZYLKER\\svc-ndes",
        ndes_password=NDES_PASSWORD,
    )
    client = api_as(alice)

    created = client.post(LIST_URL, body, format="json")
    ca = CertificateAuthority.objects.get()
    responses = [
        created,
        client.get(LIST_URL),
        client.get(detail_url(ca)),
        client.patch(detail_url(ca), {"description": "changed"}, format="json"),
        client.options(detail_url(ca)),
        client.post(connection_url(ca)),
        api_as(bob).get(detail_url(ca)),
    ]

    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 200, 200]
    assert (created.json()["has_static_challenge"], created.json()["has_ndes_password"]) == (
        True,
        True,
    )
    for response in responses:
        for secret in (STATIC.encode(), NDES_PASSWORD.encode(), b"mdmc1:"):
            assert secret not in response.content
    assert ca.reveal_secret("ndes_password") == NDES_PASSWORD


def test_a_change_keeps_omitted_secrets_and_replaces_given_ones(api_as, alice, scepserver):
    ca = external_ca_for(scepserver)
    client = api_as(alice)

    kept = client.patch(detail_url(ca), {"scep_retry_seconds": 30}, format="json")
    replaced = client.patch(detail_url(ca), {"static_challenge": "rotated-code"}, format="json")

    assert (kept.status_code, replaced.status_code) == (200, 200)
    ca.refresh_from_db()
    assert (ca.scep_retry_seconds, ca.reveal_secret("scep_static_challenge")) == (
        30,
        "rotated-code",
    )
    (event, _) = AuditEvent.objects.filter(action="update", object_id=str(ca.pk)).order_by("pk")
    assert event.changes["scep_retry_seconds"] == [10, 30]
    assert b"rotated-code" not in replaced.content


def test_clearing_the_static_challenge_of_a_static_ca_is_refused(api_as, alice, scepserver):
    ca = external_ca_for(scepserver)
    before = CertificateAuthority.objects.get(pk=ca.pk)

    response = api_as(alice).patch(detail_url(ca), {"static_challenge": ""}, format="json")

    assert response.status_code == 400
    assert response.json() == {"static_challenge": ["A static challenge type needs the challenge."]}
    after = CertificateAuthority.objects.get(pk=ca.pk)
    assert after.scep_static_challenge == before.scep_static_challenge


def test_the_slug_cannot_change(api_as, alice, scepserver):
    ca = external_ca_for(scepserver)

    response = api_as(alice).patch(detail_url(ca), {"slug": "renamed"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"slug": ["The slug cannot change: public URLs use it."]}
    assert CertificateAuthority.objects.get(pk=ca.pk).slug == ca.slug


def test_bob_who_may_only_view_cannot_add_or_change(api_as, bob, scepserver):
    ca = external_ca_for(scepserver)
    client = api_as(bob)

    responses = [
        client.post(LIST_URL, new_ca(scepserver.url, slug="other"), format="json"),
        client.patch(detail_url(ca), {"description": "changed"}, format="json"),
    ]

    assert [r.status_code for r in responses] == [403, 403]
    assert CertificateAuthority.objects.get().description == ""


# --- Test connection ----------------------------------------------------------------------


def test_test_connection_reports_capabilities_chain_and_a_matching_pin(api_as, bob, scepserver):
    ca = external_ca_for(scepserver)
    fingerprint = crypto.fingerprint_sha256(scepserver.ca_certificate)

    response = api_as(bob).post(connection_url(ca))

    assert response.status_code == 200
    report = response.json()
    assert report["chain"] == [
        {
            "role": "issuing CA",
            "subject": crypto.format_name(scepserver.ca_certificate.subject),
            "issuer": crypto.format_name(scepserver.ca_certificate.issuer),
            "not_before": report["chain"][0]["not_before"],
            "not_after": report["chain"][0]["not_after"],
            "fingerprint_sha256": fingerprint,
            "pinned": True,
        }
    ]
    assert {k: v for k, v in report.items() if k != "chain"} == {
        "ok": True,
        "error": "",
        "capabilities": [
            "Renewal",
            "SHA-1",
            "SHA-256",
            "AES",
            "DES3",
            "SCEPStandard",
            "POSTPKIOperation",
        ],
        "pinned_fingerprint": fingerprint,
        "pin_matches": True,
    }


def test_test_connection_reports_a_pin_that_getcacert_does_not_present(api_as, alice, scepserver):
    ca = external_ca_for(scepserver)
    other = self_signed_ca(make_key())
    ca.set_identity(other, None)
    ca.save()

    report = api_as(alice).post(connection_url(ca)).json()

    assert (report["ok"], report["pin_matches"], report["error"]) == (False, False, "")
    assert report["pinned_fingerprint"] == crypto.fingerprint_sha256(other)
    assert [e["fingerprint_sha256"] for e in report["chain"]] == [
        crypto.fingerprint_sha256(scepserver.ca_certificate)
    ]


def test_after_the_ca_changed_its_certificate_test_connection_and_enrollment_see_it(
    api_as, alice, start_scepserver, tmp_path
):
    # Given a CA server pinned to the certificate of the first CA...
    first = start_scepserver(tmp_path / "first")
    ca = external_ca_for(first)
    # ...whose SCEP URL now answers with another CA certificate (the CA was re-keyed).
    second = start_scepserver(tmp_path / "second")
    CertificateAuthority.objects.filter(pk=ca.pk).update(scep_url=second.url)
    ca.refresh_from_db()
    new_fingerprint = crypto.fingerprint_sha256(second.ca_certificate)

    report = api_as(alice).post(connection_url(ca)).json()

    assert (report["ok"], report["pin_matches"], report["error"]) == (False, False, "")
    assert [e["fingerprint_sha256"] for e in report["chain"]] == [new_fingerprint]
    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).ca_certificates()
    assert "fingerprint mismatch: GetCACert presents" in str(caught.value)

    # When the admin pins the new certificate, checking its fingerprint...
    response = api_as(alice).patch(
        detail_url(ca),
        {"refetch_ca_certificate": True, "expected_fingerprint": new_fingerprint},
        format="json",
    )

    # ...then the test connection matches again.
    assert response.status_code == 200, response.content
    assert response.json()["fingerprint_sha256"] == new_fingerprint
    assert api_as(alice).post(connection_url(ca)).json()["ok"] is True


def test_test_connection_to_an_unreachable_server_is_a_failed_report(api_as, alice, scepserver):
    ca = external_ca_for(scepserver)
    url = closed_url()
    CertificateAuthority.objects.filter(pk=ca.pk).update(scep_url=url)

    response = api_as(alice).post(connection_url(ca))

    assert response.status_code == 200
    assert response.json() == {
        "ok": False,
        "error": f"CA server {ca.name}: cannot reach {url}: Connection refused",
        "capabilities": [],
        "chain": [],
        "pinned_fingerprint": ca.fingerprint_sha256,
        "pin_matches": False,
    }


def test_test_connection_of_a_local_ca_is_a_400(api_as, alice):
    local = force_ca()

    response = api_as(alice).post(connection_url(local))

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"CA server {local.name} is a local CA: there is no server to test."
    }


def test_charlie_and_anonymous_cannot_test_a_connection(api_as, charlie, anonymous, scepserver):
    ca = external_ca_for(scepserver)

    responses = [api_as(charlie).post(connection_url(ca)), anonymous.post(connection_url(ca))]

    assert [r.status_code for r in responses] == [403, 401]
    assert b"Renewal" not in responses[0].content
