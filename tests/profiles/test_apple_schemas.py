"""Every rendered payload type validated against Apple's profile schemas, and the validator
shown to fail on what the schemas forbid."""

import copy
import filecmp
import hashlib
import plistlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from apps.pki.choices import KeyAlgorithm
from apps.profiles.choices import PayloadKind
from apps.profiles.rendering import mobileconfig
from tests.profiles.apple_schema import (
    SCHEMA_DIR,
    SchemaViolations,
    assert_valid_mobileconfig,
    validate_mobileconfig,
    validate_profile,
)

REFERENCE_DIR = Path(__file__).resolve().parents[3] / "shared/reference/apple-profile-schemas"
CHALLENGE = "0123456789abdynamic-challenge"


def render(profile, device) -> bytes:
    scep = profile.payloads.get(kind=PayloadKind.SCEP)
    return mobileconfig(profile, device=device, challenges={scep.uuid: CHALLENGE})


def payloads_of(document: dict, payload_type: str) -> list[dict]:
    return [p for p in document["PayloadContent"] if p["PayloadType"] == payload_type]


@pytest.fixture
def document(every_payload_profile, device) -> dict:
    return assert_valid_mobileconfig(render(every_payload_profile, device))


def test_the_schemas_here_are_apples_reference_copy():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"no reference copy at {REFERENCE_DIR} to compare with")
    names = sorted(p.name for p in REFERENCE_DIR.iterdir())
    assert sorted(p.name for p in SCHEMA_DIR.iterdir()) == names
    assert filecmp.cmpfiles(REFERENCE_DIR, SCHEMA_DIR, names, shallow=False)[0] == names


def test_a_profile_with_every_payload_kind_validates(document):
    assert sorted(p["PayloadType"] for p in document["PayloadContent"]) == [
        "com.apple.eas.account",
        "com.apple.security.pem",
        "com.apple.security.root",
        "com.apple.security.scep",
        "com.apple.vpn.managed",
        "com.apple.vpn.managed",
        "com.apple.vpn.managed",
        "com.apple.wifi.managed",
        "com.apple.wifi.managed",
    ]
    assert document["PayloadType"] == "Configuration"
    assert document["PayloadIdentifier"] == "com.zylker.wifi"


def test_the_scep_payload_carries_the_template_rendered_for_the_device(
    document, scep_template, issuing_ca
):
    (scep,) = payloads_of(document, "com.apple.security.scep")
    sha1 = hashlib.sha1(  # noqa: S324 (the fingerprint Apple devices compare)
        issuing_ca.certificate.public_bytes(serialization.Encoding.DER)
    ).digest()

    assert scep["PayloadContent"] == {
        "URL": f"http://127.0.0.1:8000/scep/{scep_template.slug}/pkiclient.exe",
        "Name": issuing_ca.name,
        "Challenge": CHALLENGE,
        "Keysize": 2048,
        "Key Type": "RSA",
        "Key Usage": 5,
        "Retries": 4,
        "RetryDelay": 90,
        "Subject": [[["C", "US"]], [["O", "Zylker"]], [["OU", "dana"]], [["CN", "C02ZK1ABMD6T"]]],
        "SubjectAltName": {
            "rfc822Name": "dana@zylker.com",
            "dNSName": "C02ZK1ABMD6T.devices.zylker.com",
            "uniformResourceIdentifier": "urn:udid:00008103-001A2B3C4D5E6F70",
            "ntPrincipalName": "dana@corp.zylker.com",
        },
        "CAFingerprint": sha1,
    }


def test_the_chain_is_a_pem_payload_for_the_intermediate_and_a_root_payload(
    document, root_ca, issuing_ca
):
    (pem,) = payloads_of(document, "com.apple.security.pem")
    (root,) = payloads_of(document, "com.apple.security.root")

    assert pem["PayloadContent"] == issuing_ca.certificate_pem.encode()
    assert root["PayloadContent"] == root_ca.certificate.public_bytes(serialization.Encoding.DER)


def test_wifi_uses_eap_tls_with_the_scep_identity_and_the_chain_as_anchors(document):
    (scep,) = payloads_of(document, "com.apple.security.scep")
    anchors = [
        payloads_of(document, kind)[0]["PayloadUUID"]
        for kind in ("com.apple.security.pem", "com.apple.security.root")
    ]
    wpa2, wpa3 = payloads_of(document, "com.apple.wifi.managed")

    assert {k: v for k, v in wpa2.items() if not k.startswith("Payload")} == {
        "SSID_STR": "ZylkerCorp",
        "HIDDEN_NETWORK": False,
        "AutoJoin": True,
        "EncryptionType": "WPA2",
        "EAPClientConfiguration": {
            "AcceptEAPTypes": [13],
            "TLSTrustedServerNames": ["radius.zylker.com", "*.radius.zylker.com"],
            "PayloadCertificateAnchorUUID": anchors,
        },
    }
    assert wpa2["PayloadCertificateUUID"] == scep["PayloadUUID"]
    assert (wpa3["EncryptionType"], wpa3["HIDDEN_NETWORK"], wpa3["AutoJoin"]) == (
        "WPA3",
        True,
        False,
    )
    assert wpa3["PayloadCertificateUUID"] == scep["PayloadUUID"]


def test_each_vpn_type_uses_the_keys_of_its_schema_dictionary(document):
    (scep,) = payloads_of(document, "com.apple.security.scep")
    identity = scep["PayloadUUID"]
    ikev2, anyconnect, ipsec = (
        {k: v for k, v in p.items() if not k.startswith("Payload")}
        for p in payloads_of(document, "com.apple.vpn.managed")
    )

    assert ikev2 == {
        "VPNType": "IKEv2",
        "UserDefinedName": "VPN IKEv2",
        "IKEv2": {
            "RemoteAddress": "ikev2.vpn.zylker.com",
            "RemoteIdentifier": "vpn.zylker.com",
            "LocalIdentifier": "dana",
            "AuthenticationMethod": "Certificate",
            "PayloadCertificateUUID": identity,
        },
    }
    assert anyconnect == {
        "VPNType": "VPN",
        "VPNSubType": "com.cisco.anyconnect",
        "UserDefinedName": "VPN Cisco AnyConnect",
        "VPN": {"AuthenticationMethod": "Certificate", "PayloadCertificateUUID": identity},
        "PPP": {"CommRemoteAddress": "anyconnect.vpn.zylker.com", "AuthName": "dana"},
    }
    assert ipsec == {
        "VPNType": "IPSec",
        "UserDefinedName": "VPN IPSec (Cisco)",
        "IPSec": {
            "RemoteAddress": "ipsec.vpn.zylker.com",
            "AuthenticationMethod": "Certificate",
            "PayloadCertificateUUID": identity,
            "XAuthEnabled": 1,
            "XAuthName": "dana",
        },
    }


def test_exchange_activesync_has_the_account_and_the_identity(document):
    (scep,) = payloads_of(document, "com.apple.security.scep")
    (eas,) = payloads_of(document, "com.apple.eas.account")

    assert {k: v for k, v in eas.items() if not k.startswith("Payload")} == {
        "Host": "mail.zylker.com",
        "SSL": True,
        "EmailAddress": "dana@zylker.com",
        "UserName": "dana@corp.zylker.com",
    }
    assert eas["PayloadCertificateUUID"] == scep["PayloadUUID"]


def test_an_rsa_4096_template_and_a_static_challenge_validate_too(
    every_payload_profile, scep_template, device
):
    scep_template.key_algorithm = KeyAlgorithm.RSA_4096
    scep_template.challenge_type = "static"
    scep_template.set_static_challenge("static-challenge-Zq81")
    scep_template.save()

    document = assert_valid_mobileconfig(
        mobileconfig(every_payload_profile, device=device, challenges={})
    )

    (scep,) = payloads_of(document, "com.apple.security.scep")
    assert (scep["PayloadContent"]["Keysize"], scep["PayloadContent"]["Challenge"]) == (
        4096,
        "static-challenge-Zq81",
    )


# The validator can fail: each break below is one the schemas forbid.


@pytest.fixture
def valid(document) -> dict:
    assert validate_profile(document) == []
    return document


def broken(document: dict, change) -> list[str]:
    document = copy.deepcopy(document)
    change(document)
    return validate_profile(document)


def scep_content(document: dict) -> dict:
    return payloads_of(document, "com.apple.security.scep")[0]["PayloadContent"]


def test_the_validator_rejects_an_undefined_key(valid):
    errors = broken(valid, lambda d: scep_content(d).update(KeyType="RSA"))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/KeyType: "
        "key is not defined by the schema"
    ]


def test_the_validator_rejects_an_undefined_key_deep_in_a_dictionary(valid):
    def change(d):
        payloads_of(d, "com.apple.wifi.managed")[0]["EAPClientConfiguration"]["EAPType"] = 13

    assert broken(valid, change) == [
        "/PayloadContent[3]<com.apple.wifi.managed>/EAPClientConfiguration/EAPType: "
        "key is not defined by the schema"
    ]


def test_the_validator_rejects_a_wrong_type(valid):
    errors = broken(valid, lambda d: scep_content(d).update(Keysize="2048"))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/Keysize: "
        "expected <integer>, got str '2048'"
    ]


def test_the_validator_does_not_take_a_boolean_for_an_integer(valid):
    errors = broken(valid, lambda d: scep_content(d).update(Retries=True))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/Retries: "
        "expected <integer>, got bool True"
    ]


def test_the_validator_rejects_a_wrong_type_inside_an_array(valid):
    errors = broken(valid, lambda d: scep_content(d)["Subject"][0][0].__setitem__(1, b"US"))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/Subject[0][0][1]: "
        "expected <string>, got bytes b'US'"
    ]


def test_the_validator_rejects_a_missing_required_key(valid):
    errors = broken(valid, lambda d: scep_content(d).pop("URL"))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/URL: required key is missing"
    ]


def test_the_validator_rejects_a_missing_common_or_top_level_key(valid):
    def change(d):
        d.pop("PayloadUUID")
        payloads_of(d, "com.apple.vpn.managed")[0].pop("UserDefinedName")

    assert broken(valid, change) == [
        "/PayloadUUID: required key is missing",
        "/PayloadContent[5]<com.apple.vpn.managed>/UserDefinedName: required key is missing",
    ]


def test_the_validator_rejects_a_value_outside_the_rangelist(valid):
    errors = broken(valid, lambda d: scep_content(d).update(Keysize=3072))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/Keysize: "
        "3072 is not one of [1024, 2048, 4096]"
    ]


def test_the_validator_rejects_a_subject_pair_that_is_not_a_pair(valid):
    errors = broken(valid, lambda d: scep_content(d)["Subject"][0][0].append("extra"))
    assert errors == [
        "/PayloadContent[0]<com.apple.security.scep>/PayloadContent/Subject[0][0]: "
        "allows at most 2 items, has 3"
    ]


def test_the_validator_rejects_a_malformed_certificate_uuid(valid):
    def change(d):
        payloads_of(d, "com.apple.eas.account")[0]["PayloadCertificateUUID"] = "scep-payload"

    assert broken(valid, change) == [
        "/PayloadContent[8]<com.apple.eas.account>/PayloadCertificateUUID: 'scep-payload' does "
        "not match ^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$"
    ]


def test_the_validator_rejects_a_payload_type_without_schema(valid):
    errors = broken(
        valid, lambda d: d["PayloadContent"][0].update(PayloadType="com.apple.security.scepx")
    )
    assert errors == ["/PayloadContent[0]: no schema for PayloadType 'com.apple.security.scepx'"]


def test_assert_valid_lists_every_violation_of_a_rendered_file(valid):
    document = copy.deepcopy(valid)
    scep_content(document).pop("URL")
    scep_content(document)["Keysize"] = "big"

    with pytest.raises(SchemaViolations) as raised:
        assert_valid_mobileconfig(plistlib.dumps(document))

    assert len(raised.value.errors) == 2
    assert validate_mobileconfig(b"not a plist") == ["not a property list: Invalid file"]
