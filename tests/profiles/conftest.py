"""Fixtures for the profile tests: a root + issuing CA chain, an RSA 2048 SCEP template with
SANs of all four types, dana's MacBook, and profiles using them.

Persona: dana owns the MacBook the profiles are rendered for (alice, bob and charlie are in
``tests/conftest.py``)."""

import pytest

from apps.devices.models import Device
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import PayloadKind, VpnType, WifiSecurity
from apps.profiles.models import Profile
from tests.factories import force_ca, force_template, force_user
from tests.profiles.factories import force_device, force_payload, force_profile

SUBJECT = "C=US,O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SANS = [
    ("rfc822", "$EMAIL$"),
    ("dns", "$DEVICE_SN$.devices.zylker.com"),
    ("uri", "urn:udid:$DEVICE_UDID$"),
    ("upn", "$USER_UPN$"),
]


@pytest.fixture
def root_ca(db) -> CertificateAuthority:
    return force_ca(subject="O=Zylker,CN=Zylker Root CA")


@pytest.fixture
def issuing_ca(root_ca) -> CertificateAuthority:
    return force_ca(parent=root_ca, path_length=0, subject="O=Zylker,CN=Zylker Issuing CA")


@pytest.fixture
def dana(db):
    return force_user("dana", email="dana@zylker.com", first_name="Dana", last_name="Scully")


@pytest.fixture
def device(dana) -> Device:
    """dana's MacBook: serial C02ZK1ABMD6T, UDID 00008103-001A2B3C4D5E6F70."""
    return force_device(owner=dana, name="dana-macbook", upn="dana@corp.zylker.com")


@pytest.fixture
def scep_template(issuing_ca) -> CertificateTemplate:
    """RSA 2048 keys, dynamic challenges, a subject and SANs of all four types."""
    return force_template(
        ca=issuing_ca,
        subject=SUBJECT,
        sans=SANS,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.DYNAMIC,
        max_failed_attempts=4,
        retry_interval_seconds=90,
    )


@pytest.fixture
def wifi_profile(scep_template, issuing_ca) -> Profile:
    """SCEP identity, the issuing CA's chain, and WPA2 Enterprise EAP-TLS bound to both."""
    profile = force_profile(
        name="Corporate Wi-Fi", identifier="com.zylker.wifi", description="Staff Wi-Fi"
    )
    identity = force_payload(
        profile, PayloadKind.SCEP, display_name="Wi-Fi identity", template=scep_template
    )
    force_payload(
        profile, PayloadKind.TRUSTED_CERTIFICATE, display_name="Zylker CA chain", ca=issuing_ca
    )
    force_payload(
        profile,
        PayloadKind.WIFI,
        display_name="Corp Wi-Fi",
        ssid="ZylkerCorp",
        wifi_security=WifiSecurity.WPA2_ENTERPRISE,
        identity=identity,
        trusted_server_names="radius.zylker.com\n*.radius.zylker.com",
    )
    return profile


@pytest.fixture
def every_payload_profile(wifi_profile) -> Profile:
    """The Wi-Fi profile plus WPA3 Wi-Fi, a VPN of each type and Exchange ActiveSync."""
    profile = wifi_profile
    identity = profile.payloads.get(kind=PayloadKind.SCEP)
    force_payload(
        profile,
        PayloadKind.WIFI,
        display_name="Corp Wi-Fi WPA3",
        ssid="ZylkerSecure",
        hidden_network=True,
        auto_join=False,
        wifi_security=WifiSecurity.WPA3_ENTERPRISE,
        identity=identity,
        trusted_server_names="radius.zylker.com",
    )
    for vpn_type in VpnType:
        force_payload(
            profile,
            PayloadKind.VPN,
            display_name=f"VPN {vpn_type.label}",
            vpn_type=vpn_type,
            server=f"{vpn_type.value}.vpn.zylker.com",
            remote_identifier="vpn.zylker.com",
            account="$USERID$",
            identity=identity,
        )
    force_payload(
        profile,
        PayloadKind.EMAIL,
        display_name="Zylker mail",
        host="mail.zylker.com",
        email_address="$EMAIL$",
        user_name="$USER_UPN$",
        identity=identity,
    )
    return profile
