"""The staff API's OpenAPI schema."""

import json

import pytest
from django.core.management import call_command
from django.test import Client

SCHEMA_URL = "/api/schema/"
PATHS = [
    "/api/v1/ca-servers/",
    "/api/v1/ca-servers/{id}/",
    "/api/v1/ca-servers/{id}/certificate/",
    "/api/v1/ca-servers/{id}/test-connection/",
    "/api/v1/templates/",
    "/api/v1/templates/{id}/",
    "/api/v1/templates/{id}/challenges/",
    "/api/v1/certificates/",
    "/api/v1/certificates/{id}/",
    "/api/v1/certificates/{id}/revoke/",
    "/api/v1/devices/",
    "/api/v1/devices/{id}/",
    "/api/v1/devices/{id}/scan/",
    "/api/v1/devices/{id}/redeliver/",
    "/api/v1/devices/{id}/unenroll/",
    "/api/v1/device-groups/",
    "/api/v1/device-groups/{id}/",
    "/api/v1/enrollment-codes/",
    "/api/v1/enrollment-codes/{id}/",
    "/api/v1/enrollment-codes/{id}/revoke/",
    "/api/v1/profiles/",
    "/api/v1/profiles/{id}/",
    "/api/v1/profile-assignments/",
    "/api/v1/profile-assignments/{id}/",
    "/api/v1/identities/",
    "/api/v1/identities/{id}/",
    "/api/v1/users/{user_pk}/identities/",
]


@pytest.fixture
def client(client, alice):
    client.force_login(alice)
    return client


def test_the_schema_is_for_staff_only(charlie):
    anonymous = Client()
    assert anonymous.get(SCHEMA_URL).status_code in (401, 403)
    anonymous.force_login(charlie)
    assert anonymous.get(SCHEMA_URL).status_code == 403


def test_the_schema_endpoint_describes_the_three_resources(client):
    response = client.get(SCHEMA_URL, HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert sorted(schema["paths"]) == sorted(PATHS)


def test_the_schema_documents_the_certificate_filters_and_the_download_encoding(client):
    schema = json.loads(
        client.get(SCHEMA_URL, HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    )

    list_parameters = schema["paths"]["/api/v1/certificates/"]["get"]["parameters"]
    download = schema["paths"]["/api/v1/ca-servers/{id}/certificate/"]["get"]
    assert sorted(p["name"] for p in list_parameters) == [
        "ca",
        "expires_within_days",
        "page",
        "q",
        "status",
        "template",
    ]
    assert [p["name"] for p in download["parameters"] if p["in"] == "query"] == ["encoding"]
    assert sorted(download["responses"]["200"]["content"]) == [
        "application/pkix-cert",
        "application/x-pem-file",
    ]


def test_the_template_schema_never_returns_the_static_challenge(client):
    schema = json.loads(
        client.get(SCHEMA_URL, HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    )

    components = schema["components"]["schemas"]
    assert "static_challenge" not in components["CertificateTemplate"]["properties"]
    assert "static_challenge" in components["CertificateTemplateRequest"]["properties"]
    assert "private_key" not in components["CertificateAuthority"]["properties"]


def test_the_ca_server_schema_never_returns_the_external_ca_secrets(client):
    schema = json.loads(
        client.get(SCHEMA_URL, HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    )

    components = schema["components"]["schemas"]
    returned = components["CertificateAuthority"]["properties"]
    accepted = components["CertificateAuthorityRequest"]["properties"]
    for secret in ("static_challenge", "ndes_password"):
        assert secret not in returned
        assert accepted[secret]["writeOnly"] is True
    assert {"has_static_challenge", "has_ndes_password"} <= set(returned)
    test_connection = schema["paths"]["/api/v1/ca-servers/{id}/test-connection/"]["post"]
    assert test_connection["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConnectionReport"
    }


def test_the_schema_generates_and_validates_without_warnings(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )

    assert "/api/v1/certificates/{id}/revoke/:" in (tmp_path / "schema.yml").read_text()
