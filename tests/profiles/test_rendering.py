"""Rendering a profile for one device: the neutral JSON of docs/device-api.md and the
.mobileconfig's stable UUIDs, refusals and variables."""

import plistlib

import pytest
from cryptography.hazmat.primitives import hashes
from django.core.exceptions import ValidationError

from apps.enrollment.choices import ChallengeType, SubjectSource
from apps.enrollment.models import TemplateSubjectAltName
from apps.enrollment.services import mint_challenge
from apps.enrollment.variables import VariableValueMissing
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.profiles.choices import PayloadKind, ProfilePlatform
from apps.profiles.rendering import ProfileNotRenderable, mobileconfig, neutral_profile
from tests.profiles.factories import force_device, force_payload, force_profile

pytestmark = pytest.mark.django_db
CHALLENGE = "0123456789abdynamic-challenge"


def scep_payload(profile):
    return profile.payloads.get(kind=PayloadKind.SCEP)


def payload_uuids(document: dict) -> list[str]:
    return [document["PayloadUUID"]] + [p["PayloadUUID"] for p in document["PayloadContent"]]


def test_the_neutral_json_is_the_documented_format_filled_for_the_device(
    wifi_profile, device, scep_template, issuing_ca, root_ca
):
    scep, trusted, wifi = wifi_profile.payloads.all()
    challenge = mint_challenge(template=scep_template, device=device)[1]

    neutral = neutral_profile(wifi_profile, device=device, challenges={scep.uuid: challenge})

    assert neutral == {
        "identifier": "com.zylker.wifi",
        "uuid": str(wifi_profile.uuid),
        "name": "Corporate Wi-Fi",
        "description": "Staff Wi-Fi",
        "version": 1,
        "payloads": [
            {
                "uuid": str(scep.uuid),
                "kind": "scep",
                "display_name": "Wi-Fi identity",
                "scep": {
                    "url": f"http://127.0.0.1:8000/scep/{scep_template.slug}/pkiclient.exe",
                    "name": issuing_ca.name,
                    "challenge": challenge,
                    "subject": [
                        ["C", "US"],
                        ["O", "Zylker"],
                        ["OU", "dana"],
                        ["CN", "C02ZK1ABMD6T"],
                    ],
                    "subject_alt_names": [
                        ["rfc822", "dana@zylker.com"],
                        ["dns", "C02ZK1ABMD6T.devices.zylker.com"],
                        ["uri", "urn:udid:00008103-001A2B3C4D5E6F70"],
                        ["upn", "dana@corp.zylker.com"],
                    ],
                    "key_type": "rsa",
                    "key_size": 2048,
                    "key_usage": {"digital_signature": True, "key_encipherment": True},
                    "retries": 4,
                    "retry_delay": 90,
                    "ca_fingerprint_sha256": issuing_ca.fingerprint_sha256,
                    "ca_fingerprint_sha1": issuing_ca.certificate.fingerprint(
                        hashes.SHA1()  # noqa: S303 (what Apple devices compare)
                    ).hex(),
                },
            },
            {
                "uuid": str(trusted.uuid),
                "kind": "trusted_certificate",
                "display_name": "Zylker CA chain",
                "trusted_certificate": {
                    "certificates_pem": [
                        crypto.cert_pem(issuing_ca.certificate),
                        crypto.cert_pem(root_ca.certificate),
                    ]
                },
            },
            {
                "uuid": str(wifi.uuid),
                "kind": "wifi",
                "display_name": "Corp Wi-Fi",
                "wifi": {
                    "ssid": "ZylkerCorp",
                    "hidden_network": False,
                    "auto_join": True,
                    "security": "wpa2_enterprise",
                    "eap_type": "tls",
                    "identity_payload_uuid": str(scep.uuid),
                    "trusted_server_names": ["radius.zylker.com", "*.radius.zylker.com"],
                    "trusted_certificate_payload_uuids": [str(trusted.uuid)],
                },
            },
        ],
    }


def test_vpn_and_email_payloads_render_their_variables(every_payload_profile, device):
    scep = scep_payload(every_payload_profile)

    neutral = neutral_profile(every_payload_profile, device=device, challenges={scep.uuid: "x"})

    vpn, email = neutral["payloads"][4], neutral["payloads"][-1]
    assert vpn["vpn"] == {
        "type": "ikev2",
        "server": "ikev2.vpn.zylker.com",
        "remote_identifier": "vpn.zylker.com",
        "account": "dana",
        "identity_payload_uuid": str(scep.uuid),
    }
    assert email["email"] == {
        "host": "mail.zylker.com",
        "use_ssl": True,
        "email_address": "dana@zylker.com",
        "user_name": "dana@corp.zylker.com",
        "identity_payload_uuid": str(scep.uuid),
    }


def test_a_static_challenge_is_revealed_into_the_profile(wifi_profile, scep_template, device):
    scep_template.challenge_type = ChallengeType.STATIC
    scep_template.set_static_challenge("static-challenge-Zq81")
    scep_template.save()

    neutral = neutral_profile(wifi_profile, device=device, challenges={})

    assert neutral["payloads"][0]["scep"]["challenge"] == "static-challenge-Zq81"


def test_a_dynamic_template_without_a_minted_challenge_is_not_renderable(wifi_profile, device):
    with pytest.raises(ProfileNotRenderable, match="no challenge was minted"):
        mobileconfig(wifi_profile, device=device, challenges={})


def test_payload_uuids_are_the_same_in_every_rendering(every_payload_profile, device, dana):
    scep = scep_payload(every_payload_profile)
    other = force_device(owner=dana, name="dana-iphone", serial_number="F2LXK0AAHG7F")

    first = plistlib.loads(
        mobileconfig(every_payload_profile, device=device, challenges={scep.uuid: "a"})
    )
    again = plistlib.loads(
        mobileconfig(every_payload_profile, device=device, challenges={scep.uuid: "b"})
    )
    for_other = plistlib.loads(
        mobileconfig(every_payload_profile, device=other, challenges={scep.uuid: "c"})
    )

    assert payload_uuids(first) == payload_uuids(again) == payload_uuids(for_other)
    assert first["PayloadUUID"] == str(every_payload_profile.uuid).upper()
    assert first["PayloadContent"][0]["PayloadUUID"] == str(scep.uuid).upper()
    assert len(set(payload_uuids(first))) == len(payload_uuids(first))
    identifiers = [p["PayloadIdentifier"] for p in first["PayloadContent"]]
    assert len(set(identifiers)) == len(identifiers)


@pytest.mark.parametrize(
    ("key_algorithm", "shown"),
    [(KeyAlgorithm.EC_P256, "EC P-256"), (KeyAlgorithm.RSA_3072, "RSA 3072")],
)
def test_a_template_apple_cannot_enroll_is_not_renderable_for_apple(
    wifi_profile, scep_template, device, key_algorithm, shown
):
    scep = scep_payload(wifi_profile)
    scep_template.key_algorithm = key_algorithm  # changed after the profile was made
    scep_template.save()

    with pytest.raises(ProfileNotRenderable) as raised:
        mobileconfig(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})

    assert str(raised.value) == (
        "SCEP payload 'Wi-Fi identity': Apple devices enroll RSA 2048 or 4096 keys only, and "
        f"request template {scep_template} asks for {shown}; change the template's key type "
        "and size, or use another template"
    )
    # Other platforms get the neutral JSON with the key the template asks for.
    neutral = neutral_profile(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})
    assert neutral["payloads"][0]["scep"]["key_type"] == crypto.KEY_STRENGTH[key_algorithm][0]


def test_the_editor_refuses_such_a_template_in_an_apple_profile(scep_template):
    scep_template.key_algorithm = KeyAlgorithm.EC_P256
    scep_template.save()
    apple = force_profile(platform=ProfilePlatform.APPLE)
    neutral_only = force_profile(platform=ProfilePlatform.ANY)

    with pytest.raises(ValidationError, match="Apple devices enroll RSA 2048 or 4096 keys only"):
        force_payload(apple, PayloadKind.SCEP, template=scep_template)
    assert force_payload(neutral_only, PayloadKind.SCEP, template=scep_template).pk


def test_a_variable_without_a_value_raises_variable_value_missing(wifi_profile, dana, device):
    scep = scep_payload(wifi_profile)
    dana.email = ""
    dana.save()

    with pytest.raises(VariableValueMissing) as raised:
        mobileconfig(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})

    assert raised.value.variable == "EMAIL"
    assert raised.value.where == "RFC 822 name (email) SAN"


def test_a_variable_in_a_payload_field_without_a_value_raises_too(every_payload_profile, device):
    scep = scep_payload(every_payload_profile)
    device.owner.attributes.delete()  # no UPN for the email user name any more
    device.owner.refresh_from_db()
    TemplateSubjectAltName.objects.filter(san_type="upn").delete()

    with pytest.raises(VariableValueMissing) as raised:
        neutral_profile(every_payload_profile, device=device, challenges={scep.uuid: CHALLENGE})

    assert (raised.value.variable, raised.value.where) == ("USER_UPN", "email user name")


def test_a_second_san_of_a_type_stays_out_of_the_request_when_the_template_decides(
    wifi_profile, scep_template, device
):
    scep = scep_payload(wifi_profile)
    TemplateSubjectAltName.objects.create(
        template=scep_template, san_type="dns", value="second.zylker.com", position=9
    )

    document = plistlib.loads(
        mobileconfig(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})
    )

    sans = document["PayloadContent"][0]["PayloadContent"]["SubjectAltName"]
    assert sans["dNSName"] == "C02ZK1ABMD6T.devices.zylker.com"


def test_a_second_san_of_a_type_from_a_request_template_is_not_renderable(
    wifi_profile, scep_template, device
):
    scep = scep_payload(wifi_profile)
    scep_template.subject_source = SubjectSource.REQUEST
    scep_template.allowed_request_san_types = ["dns"]
    scep_template.save()
    TemplateSubjectAltName.objects.create(
        template=scep_template, san_type="dns", value="second.zylker.com", position=9
    )

    with pytest.raises(ProfileNotRenderable, match="asks for one dNSName SAN"):
        mobileconfig(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})


def test_an_unsigned_profile_is_a_plain_xml_plist(wifi_profile, device):
    scep = scep_payload(wifi_profile)

    body = mobileconfig(wifi_profile, device=device, challenges={scep.uuid: CHALLENGE})

    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert plistlib.loads(body)["PayloadVersion"] == 1
