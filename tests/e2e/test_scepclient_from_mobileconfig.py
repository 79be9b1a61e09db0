"""An Apple device's view: the Wi-Fi profile delivered through the device API as a
.mobileconfig, and micromdm's ``scepclient`` (Debian package ``scep``) enrolling with the
URL and challenge of its SCEP payload, as a Mac would.

scepclient 2.1 sends single-DES and SHA-1 whatever the server offers, so the template
accepts single DES (``allow_single_des``).
"""

import plistlib
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.devices.models import Device
from apps.enrollment.models import Challenge
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.profiles.models import Delivery
from tests import openssl
from tests.e2e.conftest import (
    enrollment_code,
    make_ca,
    make_dynamic_template,
    make_group,
    make_wifi_profile,
)

pytestmark = pytest.mark.django_db(transaction=True)

MISSING = "micromdm's scepclient is required: install the Debian package scep"
SERIAL = "C02ERINMAC01"


@pytest.fixture
def mac(server, make_agent, erin):
    """Erin's MacBook, enrolled into the Wi-Fi group and checked in once: its agent,
    device, the profile and the .mobileconfig it received."""
    ca = make_ca(KeyAlgorithm.RSA_2048)  # an RSA CA, as Apple devices expect
    template = make_dynamic_template(ca, allow_single_des=True)
    group = make_group()
    profile = make_wifi_profile(template=template, ca=ca, group=group)
    agent = make_agent("erin-mac")
    answer = agent.enroll(
        enrollment_code(erin, group), name="Erin's MacBook", serial=SERIAL, platform="macos"
    )
    result = agent.checkin()
    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["profile_id"]) == ("saved", profile.pk), result
    with open(outcome["path"], "rb") as handle:
        document = plistlib.load(handle)
    device = Device.objects.get(pk=answer["device_id"])
    return {"ca": ca, "template": template, "profile": profile, "device": device, "plist": document}


def scep_payload(document: dict) -> dict:
    (payload,) = [
        p for p in document["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep"
    ]
    return payload["PayloadContent"]


def run_scepclient(url: str, challenge: str, workdir) -> subprocess.CompletedProcess:
    """Run scepclient as the profile says, with its key and certificate in ``workdir``."""
    binary = shutil.which("scepclient")
    if binary is None:
        pytest.fail(MISSING)
    command = [
        binary, "-server-url", url, "-challenge", challenge,
        "-private-key", str(workdir / "client.key"), "-certificate", str(workdir / "client.pem"),
        "-cn", "erin-mac", "-debug",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def scepclient(url: str, challenge: str, workdir) -> x509.Certificate:
    """The certificate scepclient obtained with this URL and challenge."""
    result = run_scepclient(url, challenge, workdir)
    assert result.returncode == 0, f"scepclient failed:\n{result.stdout}\n{result.stderr}"
    return x509.load_pem_x509_certificate((workdir / "client.pem").read_bytes())


def test_scepclient_is_installed():
    # A plain failure (not only an error in a test) when the client is missing.
    assert shutil.which("scepclient") is not None, MISSING


def test_the_device_api_gives_the_mac_a_mobileconfig_with_its_scep_payload(mac, server):
    content = scep_payload(mac["plist"])

    assert mac["plist"]["PayloadIdentifier"] == mac["profile"].identifier
    assert content["URL"] == f"{server}/scep/{mac['template'].slug}/pkiclient.exe"
    assert content["Challenge"]
    assert content["CAFingerprint"] == mac["ca"].certificate.fingerprint(hashes.SHA1())  # noqa: S303
    assert content["Subject"] == [[["O", "Zylker"]], [["OU", "erin"]], [["CN", SERIAL]]]
    assert (content["Keysize"], content["Key Type"]) == (2048, "RSA")
    (challenge,) = Challenge.objects.filter(device=mac["device"])
    assert (challenge.used_at, challenge.profile) == (None, mac["profile"])
    assert Delivery.objects.get(device=mac["device"]).status == "delivered"


def test_scepclient_enrolls_with_the_url_and_challenge_of_the_mobileconfig(mac, tmp_path):
    content = scep_payload(mac["plist"])
    workdir = tmp_path / "scepclient"
    workdir.mkdir()

    cert = scepclient(content["URL"], content["Challenge"], workdir)

    row = Certificate.objects.get(fingerprint_sha256=crypto.fingerprint_sha256(cert))
    assert (row.device, row.user, row.profile) == (
        mac["device"],
        mac["device"].owner,
        mac["profile"],
    )
    assert (row.template, row.source) == (mac["template"], "scep")
    # The template decides the names, not scepclient's -cn.
    assert cert.subject.rfc4514_string() == f"CN={SERIAL},OU=erin,O=Zylker"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["erin@zylker.com"]
    assert Challenge.objects.get(device=mac["device"]).used_at is not None
    verified = openssl.verify(
        crypto.cert_pem(cert), root_pem=crypto.cert_pem(mac["ca"].certificate), tmp=tmp_path
    )
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_the_mobileconfig_challenge_works_once_only(mac, tmp_path):
    content = scep_payload(mac["plist"])
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    scepclient(content["URL"], content["Challenge"], first)

    replay = run_scepclient(content["URL"], content["Challenge"], second)

    assert replay.returncode != 0
    assert not (second / "client.pem").exists()
    assert Certificate.objects.count() == 1
    refusal = AuditEvent.objects.filter(action="issue_failed").latest("created_at", "id")
    assert refusal.message.endswith("the challenge password is wrong, expired or used")
