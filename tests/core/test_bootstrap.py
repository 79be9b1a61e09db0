"""``manage.py bootstrap --demo``: one JSON object, idempotent, credentials that work."""

import json
from io import StringIO

import pytest
from cryptography import x509
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.certificates.models import Certificate
from apps.certificates.services import issue_certificate
from apps.core.models import ApiToken, hash_token
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from apps.enrollment.variables import values_for_user
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from tests.factories import make_csr, make_key

pytestmark = pytest.mark.django_db

JSON_KEYS = {
    "admin_url",
    "admin_username",
    "admin_password",
    "api_token",
    "ca_name",
    "template_slug",
    "scep_url",
    "static_challenge",
}


def bootstrap(*args: str) -> str:
    out = StringIO()
    call_command("bootstrap", *args, stdout=out)
    return out.getvalue()


def bootstrap_json() -> dict:
    # json.loads refuses anything but exactly one JSON value.
    return json.loads(bootstrap("--demo", "--json"))


def demo_objects() -> dict:
    return {
        "users": sorted(get_user_model().objects.values_list("pk", flat=True)),
        "cas": sorted(CertificateAuthority.objects.values_list("pk", flat=True)),
        "templates": sorted(CertificateTemplate.objects.values_list("pk", flat=True)),
        "san_rows": sorted(TemplateSubjectAltName.objects.values_list("pk", flat=True)),
        "tokens": sorted(ApiToken.objects.values_list("pk", flat=True)),
    }


def test_it_prints_one_json_object_with_every_key():
    data = bootstrap_json()

    assert set(data) >= JSON_KEYS
    base = settings.PUBLIC_BASE_URL
    assert data["admin_url"] == f"{base}/admin/"
    assert data["admin_username"] == "admin"
    assert data["ca_name"] == "mdmcerts Demo Root CA"
    assert data["template_slug"] == "demo"
    assert data["scep_url"] == f"{base}/scep/demo/pkiclient.exe"
    for key in ("admin_password", "api_token", "static_challenge"):
        assert isinstance(data[key], str) and len(data[key]) >= 16
    assert data["created"] == ["admin", "api_token", "ca", "template"]


def test_it_creates_the_demo_ca_and_template_as_documented():
    data = bootstrap_json()

    ca = CertificateAuthority.objects.get(slug="demo-root")
    assert ca.parent is None and ca.has_private_key
    assert ca.subject == "O=mdmcerts demo,CN=mdmcerts Demo Root CA"
    assert ca.key_algorithm == KeyAlgorithm.RSA_2048
    assert 3640 <= (ca.not_after - ca.not_before).days <= 3655
    template = CertificateTemplate.objects.get(slug="demo")
    assert template.name == "Demo device certificate"
    assert template.ca == ca
    assert template.subject == "O=mdmcerts demo,CN=$USERID$"
    assert (template.subject_source, template.allowed_request_san_types) == (
        "request",
        ["dns", "rfc822"],
    )
    assert template.extended_key_usages == ["1.3.6.1.5.5.7.3.2"]
    assert template.challenge_type == ChallengeType.STATIC
    assert template.static_challenge_matches(data["static_challenge"])


def test_running_it_twice_gives_the_same_objects_and_values():
    first = bootstrap_json()
    objects = demo_objects()

    second = bootstrap_json()

    assert demo_objects() == objects
    assert second["created"] == []
    assert {k: v for k, v in second.items() if k != "created"} == {
        k: v for k, v in first.items() if k != "created"
    }


def test_the_printed_password_logs_into_the_console(client):
    data = bootstrap_json()

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": data["admin_username"], "password": data["admin_password"]},
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_the_printed_token_authenticates_against_the_api(client):
    data = bootstrap_json()
    token = ApiToken.objects.get(key_hash=hash_token(data["api_token"]))
    assert token.user.username == "admin" and token.revoked_at is None

    response = client.get("/api/v1/", HTTP_AUTHORIZATION=f"Token {data['api_token']}")

    assert response.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert client.get("/api/v1/", HTTP_AUTHORIZATION="Token not-the-key").status_code == 401


def test_a_password_changed_since_is_not_printed():
    bootstrap_json()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen by the admin 42")
    admin.save()

    data = bootstrap_json()
    summary = bootstrap("--demo")

    assert data["admin_password"] is None
    assert "changed since bootstrap" in summary
    admin.refresh_from_db()
    assert admin.check_password("chosen by the admin 42")


def test_a_revoked_demo_token_is_neither_printed_nor_recreated():
    first = bootstrap_json()
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")

    data = bootstrap_json()

    assert data["api_token"] is None
    assert ApiToken.objects.count() == 1
    assert first["api_token"]


def test_the_human_summary_shows_the_credentials():
    data = bootstrap_json()

    summary = bootstrap("--demo")

    assert "created: nothing (already set up)" in summary
    for key in ("admin_url", "admin_password", "api_token", "scep_url", "static_challenge"):
        assert data[key] in summary


def test_verbosity_zero_prints_nothing_but_still_creates():
    assert bootstrap("--demo", "--verbosity", "0") == ""

    assert CertificateTemplate.objects.filter(slug="demo").exists()


def test_without_demo_it_creates_nothing():
    with pytest.raises(CommandError, match="--demo"):
        bootstrap()

    assert demo_objects() == {k: [] for k in demo_objects()}


def test_the_demo_template_issues_what_the_request_names_within_its_san_types():
    bootstrap_json()
    admin = get_user_model().objects.get(username="admin")
    template = CertificateTemplate.objects.get(slug="demo")
    csr = make_csr(
        make_key(KeyAlgorithm.RSA_2048),
        subject=x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "laptop-42")]),
        extensions=[
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName("laptop-42.example.com"), x509.RFC822Name("admin@example.com")]
                ),
                False,
            )
        ],
    )

    row = issue_certificate(csr, template, values_for_user(admin), user=admin)

    cert = row.certificate
    assert row.subject == "CN=laptop-42"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["admin@example.com"]
    assert sans.get_values_for_type(x509.DNSName) == ["laptop-42.example.com"]
    assert Certificate.objects.count() == 1
