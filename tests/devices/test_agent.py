"""The reference agent's pure parts: the CSR it builds from a SCEP payload, its state
files, polling bounds and what it reads from a CertRep. Its talk with a real server is in
``tests/e2e/``."""

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, NameOID
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.devices import agent
from apps.scep.protocol.client import CertRepResult
from apps.scep.protocol.constants import FailInfo, PKIStatus
from tests.factories import self_signed_ca

ROOT = Path(__file__).resolve().parents[2]
UPN = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


def scep_payload(**overrides) -> dict:
    payload = {
        "url": "http://certs.example.com/scep/wifi/pkiclient.exe",
        "challenge": "0123456789abcdef-challenge",
        "subject": [["C", "US"], ["O", "Zylker"], ["OU", "erin"], ["CN", "SN-ERIN-1"]],
        "subject_alt_names": [
            ["rfc822", "erin@zylker.com"],
            ["dns", "SN-ERIN-1.devices.zylker.com"],
            ["uri", "urn:device:7"],
            ["upn", "erin@corp.zylker.com"],
        ],
        "key_type": "rsa",
        "key_size": 2048,
        "key_usage": {"digital_signature": True, "key_encipherment": True},
        "retries": 3,
        "retry_delay": 10,
    }
    return {**payload, **overrides}


@pytest.fixture(scope="module")
def rsa_key():
    return agent.generate_key("rsa", 2048)


def state(**overrides) -> agent.AgentState:
    fields = {
        "server": "http://certs.example.com",
        "device_id": 7,
        "token": "device-token-1",
        "facts": {"name": "erin-laptop", "platform": "linux", "serial_number": "SN-ERIN-1"},
    }
    return agent.AgentState(**{**fields, **overrides})


def installed_profile(profile_id: int, *files: agent.InstalledFile) -> agent.InstalledProfile:
    return agent.InstalledProfile(
        profile_id=profile_id,
        identifier=f"com.example.p{profile_id}",
        uuid=str(uuid.uuid4()),
        version=2,
        generation=1,
        installed_at="2026-01-01T00:00:00+00:00",
        certificates=list(files),
    )


# --- the CSR ------------------------------------------------------------------------------


def test_the_csr_has_exactly_the_payloads_subject_in_order(rsa_key):
    csr = agent.build_csr(scep_payload(), rsa_key)

    assert [(a.oid, a.value) for a in csr.subject] == [
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_NAME, "Zylker"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "erin"),
        (NameOID.COMMON_NAME, "SN-ERIN-1"),
    ]
    assert csr.subject.rfc4514_string() == "CN=SN-ERIN-1,OU=erin,O=Zylker,C=US"
    assert csr.is_signature_valid
    assert csr.public_key() == rsa_key.public_key()


def test_the_csr_has_exactly_the_payloads_sans_with_the_upn_as_other_name(rsa_key):
    csr = agent.build_csr(scep_payload(), rsa_key)

    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not sans.critical
    assert list(sans.value) == [
        x509.RFC822Name("erin@zylker.com"),
        x509.DNSName("SN-ERIN-1.devices.zylker.com"),
        x509.UniformResourceIdentifier("urn:device:7"),
        x509.OtherName(UPN, core.UTF8String("erin@corp.zylker.com").dump()),
    ]
    (upn,) = sans.value.get_values_for_type(x509.OtherName)
    assert core.UTF8String.load(upn.value).native == "erin@corp.zylker.com"


def test_the_csr_carries_the_challenge_and_the_key_usage(rsa_key):
    csr = agent.build_csr(scep_payload(), rsa_key)

    challenge = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    assert challenge.value == b"0123456789abcdef-challenge"
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert (usage.value.digital_signature, usage.value.key_encipherment) == (True, True)
    assert not usage.value.key_cert_sign


def test_a_payload_without_challenge_sans_or_usage_gives_a_bare_csr(rsa_key):
    payload = scep_payload(challenge="", subject_alt_names=[], key_usage={})

    csr = agent.build_csr(payload, rsa_key)

    assert list(csr.extensions) == []
    assert list(csr.attributes) == []


def test_dotted_oids_and_every_documented_short_name_are_understood():
    labels = ["C", "ST", "L", "O", "OU", "CN", "E", "DC", "UID", "serialNumber", "T", "GN", "SN"]
    pairs = [[label, "US" if label == "C" else f"v-{label}"] for label in labels]

    name = agent.subject_name([*pairs, ["2.5.4.65", "pseudo"]])

    assert len(name) == len(labels) + 1
    assert name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "v-serialNumber"
    assert name.get_attributes_for_oid(NameOID.SURNAME)[0].value == "v-SN"
    assert name.get_attributes_for_oid(NameOID.PSEUDONYM)[0].value == "pseudo"


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([["XX", "a"]], "unknown subject attribute 'XX'"),
        ([["C", "USA"]], "subject C='USA' is not valid"),
    ],
)
def test_a_subject_the_agent_cannot_build_fails_the_profile(pairs, message):
    with pytest.raises(agent.ProfileError, match=message):
        agent.subject_name(pairs)


def test_a_dns_name_is_idna_encoded_and_an_unknown_san_type_fails():
    assert agent.general_name("dns", "bücher.example.com") == x509.DNSName(
        "xn--bcher-kva.example.com"
    )
    with pytest.raises(agent.ProfileError, match="unknown SAN type 'ip'"):
        agent.general_name("ip", "192.0.2.1")


@pytest.mark.parametrize(
    ("key_type", "key_size", "expected"),
    [("rsa", 2048, rsa.RSAPrivateKey), ("ec", 256, ec.EllipticCurvePrivateKey)],
)
def test_it_generates_the_payloads_key(key_type, key_size, expected):
    key = agent.generate_key(key_type, key_size)

    assert isinstance(key, expected)
    assert key.key_size == key_size


@pytest.mark.parametrize(("key_type", "key_size"), [("rsa", 1024), ("ec", 521), ("dsa", 2048)])
def test_a_key_it_cannot_make_fails_the_profile(key_type, key_size):
    with pytest.raises(agent.ProfileError, match=f"cannot generate a {key_type} key"):
        agent.generate_key(key_type, key_size)


# --- polling and CertReps ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "retry_delay", "max_wait", "expected"),
    [
        (3, 10, 600, [10.0, 10.0, 10.0]),
        (5, 60, 10, [2.0] * 5),  # spread over --max-wait
        (0, 60, 600, []),
        (10_000, 1, 10_000, [1.0] * agent.MAX_POLLS),
        (2, -5, 600, [0.0, 0.0]),
    ],
)
def test_polls_are_bounded_by_retries_and_max_wait(retries, retry_delay, max_wait, expected):
    assert agent.poll_delays(retries, retry_delay, max_wait) == expected


def cert_rep(status: PKIStatus, *certificates, fail_info=None, text=None) -> CertRepResult:
    return CertRepResult(
        status=status,
        fail_info=fail_info,
        fail_info_text=text,
        transaction_id="t",
        recipient_nonce=b"n",
        sender_nonce=b"s",
        certificates=list(certificates),
    )


def issue(ca_key, ca_cert: x509.Certificate, public_key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .sign(ca_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ca():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed_ca(key)


def test_it_takes_the_issued_certificate_that_matches_its_key(ca, rsa_key):
    ca_key, ca_cert = ca
    other = issue(ca_key, ca_cert, agent.generate_key("ec", 256).public_key())
    mine = issue(ca_key, ca_cert, rsa_key.public_key())

    assert agent.issued_certificate(cert_rep(PKIStatus.SUCCESS, other, mine), rsa_key, ca_cert) == (
        mine
    )


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (cert_rep(PKIStatus.PENDING), "still pending"),
        (
            cert_rep(PKIStatus.FAILURE, fail_info=FailInfo.BAD_REQUEST, text="wrong challenge"),
            "SCEP: BAD_REQUEST: wrong challenge",
        ),
        (cert_rep(PKIStatus.SUCCESS), "no certificate for this key"),
    ],
)
def test_a_certrep_without_a_certificate_for_the_key_fails_the_profile(
    ca, rsa_key, result, message
):
    with pytest.raises(agent.ProfileError, match=message):
        agent.issued_certificate(result, rsa_key, ca[1])


def test_a_certificate_not_issued_by_the_ca_is_refused(ca, rsa_key):
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    forged = issue(impostor_key, self_signed_ca(impostor_key), rsa_key.public_key())

    with pytest.raises(agent.ProfileError, match="not issued by the CA"):
        agent.issued_certificate(cert_rep(PKIStatus.SUCCESS, forged), rsa_key, ca[1])


def test_the_issuing_ca_is_the_one_the_profile_names_by_fingerprint(ca):
    _, ca_cert = ca
    other = self_signed_ca(ec.generate_private_key(ec.SECP256R1()))
    wanted = ca_cert.fingerprint(hashes.SHA256()).hex().upper()

    assert agent.issuing_ca([other, ca_cert], wanted) == ca_cert
    assert agent.issuing_ca([other, ca_cert], "") == other
    with pytest.raises(agent.ProfileError, match="does not match the profile's CA fingerprint"):
        agent.issuing_ca([other], wanted)


def test_query_parameters_are_added_to_the_scep_url():
    assert agent.with_query("http://h/scep/x/pkiclient.exe", operation="GetCACaps") == (
        "http://h/scep/x/pkiclient.exe?operation=GetCACaps"
    )
    assert agent.with_query("http://h/cgi?tenant=a", operation="PKIOperation", message="a+/=") == (
        "http://h/cgi?tenant=a&operation=PKIOperation&message=a%2B%2F%3D"
    )


# --- state files --------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_survives_a_round_trip_and_is_private(tmp_path):
    state_dir = tmp_path / "agent"
    agent.make_private_dir(state_dir)
    record = agent.InstalledFile(
        payload_uuid=str(uuid.uuid4()), kind="identity", certificate="c.pem", key="k.pem"
    )
    saved = state(profiles={3: installed_profile(3, record)}, inventory_due=True)

    agent.save_state(state_dir, saved)

    assert agent.load_state(state_dir) == saved
    assert mode(state_dir / "state.json") == 0o600
    assert mode(state_dir) == 0o700
    assert json.loads((state_dir / "state.json").read_text())["profiles"]["3"]["version"] == 2
    assert sorted(p.name for p in state_dir.iterdir()) == ["state.json"]  # no temporary left


def test_private_files_are_0600_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        agent.write_private(tmp_path / "key.pem", b"secret")
        agent.write_public(tmp_path / "cert.pem", b"public")
    finally:
        os.umask(previous)

    assert (mode(tmp_path / "key.pem"), mode(tmp_path / "cert.pem")) == (0o600, 0o644)


def test_a_missing_state_is_none_and_a_damaged_one_an_error(tmp_path):
    assert agent.load_state(tmp_path) is None

    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(agent.AgentError, match="cannot be read"):
        agent.load_state(tmp_path)

    (tmp_path / "state.json").write_text('{"server": "x"}')
    with pytest.raises(agent.AgentError, match="is not an agent state"):
        agent.load_state(tmp_path)


def test_a_second_run_on_the_same_state_dir_is_refused(tmp_path):
    agent.save_state(tmp_path, state())

    with (
        agent.locked(tmp_path),
        pytest.raises(agent.AgentError, match="another agent run"),
        agent.locked(tmp_path),
    ):
        pass


def write_certificate(state_dir: Path, profile_id: int, name: str, cert: x509.Certificate):
    directory = agent.profile_dir(state_dir, profile_id)
    agent.make_private_dir(directory)
    agent.write_public(directory / name, agent.pem(cert))
    return agent.InstalledFile(payload_uuid=str(uuid.uuid4()), kind="trusted", certificate=name)


def test_the_inventory_lists_each_certificate_on_disk_once(tmp_path, ca):
    _, ca_cert = ca
    other = self_signed_ca(ec.generate_private_key(ec.SECP256R1()))
    current = state(
        profiles={
            1: installed_profile(1, write_certificate(tmp_path, 1, "a.pem", ca_cert)),
            2: installed_profile(
                2,
                write_certificate(tmp_path, 2, "b.pem", ca_cert),
                write_certificate(tmp_path, 2, "c.pem", other),
                agent.InstalledFile(payload_uuid="x", kind="identity", certificate="gone.pem"),
            ),
        }
    )

    inventory = agent.installed_certificates(tmp_path, current)

    assert inventory == [{"pem": agent.pem(ca_cert).decode()}, {"pem": agent.pem(other).decode()}]


def test_removing_a_profile_deletes_its_files_and_forgets_it(tmp_path, ca):
    record = write_certificate(tmp_path, 4, "a.pem", ca[1])
    (agent.profiles_root(tmp_path) / "4.mobileconfig").write_bytes(b"<plist/>")
    current = state(profiles={4: installed_profile(4, record), 5: installed_profile(5)})

    agent.remove_profile(tmp_path, current, 4)

    assert not agent.profile_dir(tmp_path, 4).exists()
    assert not (agent.profiles_root(tmp_path) / "4.mobileconfig").exists()
    assert list(current.profiles) == [5]


def test_the_profile_kept_on_disk_has_no_challenge():
    profile = {"payloads": [{"kind": "scep", "scep": scep_payload()}, {"kind": "wifi"}]}

    kept = agent.redacted(profile)

    assert kept["payloads"][0]["scep"]["challenge"] == ""
    assert profile["payloads"][0]["scep"]["challenge"] == "0123456789abcdef-challenge"


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"format": "pkcs12"}, "cannot install the format 'pkcs12'"),
        ({"format": "json", "profile": {"payloads": [{"kind": "acme"}]}}, "'acme' payloads"),
        ({"format": "json", "profile": {}}, None),
        ({"format": "json"}, "the profile is malformed"),
        (
            {
                "format": "json",
                "profile": {"payloads": [{"kind": "wifi", "wifi": {"identity_payload_uuid": "x"}}]},
            },
            "names an identity certificate that the profile does not carry",
        ),
    ],
)
def test_a_profile_it_cannot_install_is_an_outcome_not_a_crash(tmp_path, item, error):
    current = state()
    item = {"profile_id": 9, "identifier": "com.example.x", "version": 1, "generation": 1, **item}

    outcome = agent.install_item(item, tmp_path, current, max_wait=0)

    if error is None:
        assert (outcome.action, list(current.profiles)) == ("installed", [9])
    else:
        assert (outcome.action, current.profiles) == ("failed", {})
        assert error in outcome.error
        assert not agent.profile_dir(tmp_path, 9).exists()
    root = agent.profiles_root(tmp_path)
    left = sorted(p.name for p in root.iterdir()) if root.exists() else []
    assert left == (["9"] if error is None else [])  # no staging directory left behind


def test_an_installed_profile_is_kept_in_private_directories(tmp_path):
    item = {"profile_id": 3, "format": "json", "profile": {"payloads": []}}

    outcome = agent.install_item(item, tmp_path, state(), max_wait=0)

    assert outcome.action == "installed"
    assert mode(agent.profiles_root(tmp_path)) == 0o700
    assert mode(agent.profile_dir(tmp_path, 3)) == 0o700
    assert mode(agent.profile_dir(tmp_path, 3) / "profile.json") == 0o600


# --- the command --------------------------------------------------------------------------


def test_the_agent_module_needs_no_django_and_no_database():
    code = (
        "import sys, apps.devices.agent; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django' or "
        "m.endswith('.models')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_checkin_without_enrollment_is_a_usage_error(tmp_path):
    with pytest.raises(CommandError, match="not enrolled") as caught:
        call_command("agent", "--state-dir", str(tmp_path / "none"), "checkin")

    assert caught.value.returncode == 2
    assert not (tmp_path / "none").exists()


def test_an_unreachable_server_is_a_server_error_and_saves_nothing(tmp_path):
    with pytest.raises(CommandError, match="unreachable") as caught:
        call_command(
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--state-dir",
            str(tmp_path),
            "enroll",
            "--code",
            "some-code",
        )

    assert caught.value.returncode == 2
    assert agent.load_state(tmp_path) is None
