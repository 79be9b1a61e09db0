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
from apps.devices.models import Device, DeviceGroup, EnrollmentCode
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from apps.enrollment.variables import values_for_user
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload
from apps.profiles.rendering import neutral_profile
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
    "portal_username",
    "portal_password",
    "enrollment_code",
}
CREATED = [
    "admin",
    "api_token",
    "ca",
    "template",
    "portal_user",
    "wifi_template",
    "group",
    "profile",
    "enrollment_code",
]


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
        "groups": sorted(DeviceGroup.objects.values_list("pk", flat=True)),
        "profiles": sorted(Profile.objects.values_list("pk", "version")),
        "payloads": sorted(ProfilePayload.objects.values_list("pk", flat=True)),
        "assignments": sorted(ProfileAssignment.objects.values_list("pk", flat=True)),
        "codes": sorted(EnrollmentCode.objects.values_list("pk", flat=True)),
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
    assert data["portal_username"] == "demo.user"
    assert data["wifi_template_slug"] == "demo-wifi"
    assert data["wifi_scep_url"] == f"{base}/scep/demo-wifi/pkiclient.exe"
    assert data["device_api_url"] == f"{base}/api/device/v1/"
    assert (data["group_name"], data["profile_name"]) == ("Demo devices", "Demo Wi-Fi")
    secrets = ("admin_password", "api_token", "static_challenge", "portal_password")
    for key in (*secrets, "enrollment_code"):
        assert isinstance(data[key], str) and len(data[key]) >= 16
    assert len({data[key] for key in (*secrets, "enrollment_code")}) == 5
    assert data["created"] == CREATED


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
    third = bootstrap_json()

    assert demo_objects() == objects
    assert second["created"] == [] and third["created"] == []
    assert third == second
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
    keys = ("admin_url", "admin_password", "api_token", "scep_url", "static_challenge")
    for key in (*keys, "portal_username", "portal_password", "enrollment_code"):
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


def test_it_creates_the_demo_end_user_who_can_sign_in(client):
    data = bootstrap_json()

    user = get_user_model().objects.get(username=data["portal_username"])
    assert (user.email, user.is_staff, user.is_superuser) == ("demo.user@example.com", False, False)
    assert user.check_password(data["portal_password"])
    response = client.post(
        "/portal/sign-in/",
        {"username": data["portal_username"], "password": data["portal_password"]},
    )
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_a_portal_password_changed_since_is_not_printed():
    bootstrap_json()
    user = get_user_model().objects.get(username="demo.user")
    user.set_password("chosen by the user 42")
    user.save()

    data = bootstrap_json()

    assert data["portal_password"] is None
    assert "changed since bootstrap" in bootstrap("--demo")


def test_it_creates_the_dynamic_wifi_template():
    bootstrap_json()

    template = CertificateTemplate.objects.get(slug="demo-wifi")
    assert template.name == "Demo Wi-Fi certificate"
    assert template.ca == CertificateAuthority.objects.get(slug="demo-root")
    assert template.challenge_type == ChallengeType.DYNAMIC
    assert (template.subject_source, template.subject) == (
        "template",
        "O=mdmcerts demo,CN=$USERID$",
    )
    assert template.key_algorithm == KeyAlgorithm.RSA_2048
    assert template.extended_key_usages == ["1.3.6.1.5.5.7.3.2"]
    assert [(row.san_type, row.value) for row in template.san_rows.all()] == [
        ("rfc822", "$EMAIL$"),
        ("dns", "$DEVICE_SN$.devices.example.com"),
    ]
    # The first template keeps its static challenge for scripts.
    assert CertificateTemplate.objects.get(slug="demo").challenge_type == ChallengeType.STATIC


def test_it_creates_the_group_with_the_wifi_profile_assigned():
    bootstrap_json()

    group = DeviceGroup.objects.get(name="Demo devices")
    profile = Profile.objects.get(identifier="com.example.mdmcerts.demo.wifi")
    assert (profile.name, profile.platform) == ("Demo Wi-Fi", "any")
    assert list(profile.assignments.values_list("group", "device")) == [(group.pk, None)]
    scep, trust, wifi = profile.payloads.all()
    assert (scep.kind, scep.template.slug) == ("scep", "demo-wifi")
    assert (trust.kind, trust.ca.slug) == ("trusted_certificate", "demo-root")
    assert (wifi.kind, wifi.ssid, wifi.wifi_security) == (
        "wifi",
        "mdmcerts-demo",
        "wpa2_enterprise",
    )
    assert wifi.identity == scep


def test_the_printed_enrollment_code_is_stored_hashed_for_the_demo_group():
    data = bootstrap_json()

    code = EnrollmentCode.objects.get()
    assert code.code_hash == hash_token(data["enrollment_code"])
    assert code.prefix == data["enrollment_code"][:8]
    assert code.owner.username == "demo.user"
    assert code.group.name == "Demo devices"
    assert (code.max_uses, code.expires_at, code.revoked_at) == (None, None, None)
    assert data["enrollment_code"] not in str(EnrollmentCode.objects.values().get())


def test_a_revoked_demo_code_is_neither_printed_nor_recreated():
    bootstrap_json()
    EnrollmentCode.objects.update(revoked_at="2026-01-01T00:00:00Z")

    data = bootstrap_json()

    assert data["enrollment_code"] is None
    assert EnrollmentCode.objects.count() == 1
    assert "Agent " not in bootstrap("--demo")


def test_the_demo_profile_renders_for_a_device_of_the_demo_user():
    bootstrap_json()
    user = get_user_model().objects.get(username="demo.user")
    device = Device.objects.create(
        name="demo laptop", platform="linux", serial_number="DEMO-0001", owner=user
    )
    profile = Profile.objects.get(identifier="com.example.mdmcerts.demo.wifi")
    scep_payload = profile.payloads.get(kind="scep")

    rendered = neutral_profile(profile, device=device, challenges={scep_payload.uuid: "c" * 44})

    scep = rendered["payloads"][0]["scep"]
    assert scep["subject"] == [["O", "mdmcerts demo"], ["CN", "demo.user"]]
    assert scep["subject_alt_names"] == [
        ["rfc822", "demo.user@example.com"],
        ["dns", "DEMO-0001.devices.example.com"],
    ]
    assert (scep["key_type"], scep["key_size"]) == ("rsa", 2048)
