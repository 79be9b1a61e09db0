"""micromdm's ``scepclient`` 2.1 (Debian package ``scep``) enrolls against the live server.

scepclient only sends single-DES envelopes signed with SHA-1, so its templates opt in
with ``allow_single_des``; a template without the opt-in refuses it with badAlg. It also
encrypts to every certificate of the GetCACert answer and panics on an EC one, so its CA
here is RSA. It runs as a subprocess against pytest-django's live server, on SQLite or
PostgreSQL alike.
"""

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, CertificateRequest
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import Challenge
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ra
from tests import openssl
from tests.factories import force_ca
from tests.scep.conftest import DEVICE_SERIAL, STATIC_CHALLENGE, endpoint_path

pytestmark = pytest.mark.django_db(transaction=True)
MISSING = "micromdm's scepclient is required: install the Debian package scep (CI installs it)"
TIMEOUT = 60


@pytest.fixture
def rsa_ca(db) -> CertificateAuthority:
    return ensure_ra(force_ca(key_algorithm=KeyAlgorithm.RSA_2048))


@pytest.fixture
def scepclient() -> str:
    binary = shutil.which("scepclient")
    if binary is None:
        pytest.fail(MISSING)
    return binary


def run_scepclient(binary: str, url: str, workdir: Path, *extra: str):
    command = [
        binary, "-server-url", url, "-private-key", str(workdir / "client.key"),
        "-cn", "scepclient-device", "-organization", "Zylker", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def saved_certificate(workdir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((workdir / "client.pem").read_bytes())


def assert_verifies_against(workdir: Path, ca) -> None:
    ca_pem = ca.certificate.public_bytes(serialization.Encoding.PEM).decode()
    verified = openssl.verify((workdir / "client.pem").read_text(), root_pem=ca_pem, tmp=workdir)
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    assert verified.stdout.decode().strip().endswith(": OK")


def test_scepclient_is_installed():
    # A plain failure, not only fixture errors, when the interop partner is missing.
    assert shutil.which("scepclient") is not None, MISSING


def test_scepclient_enrolls_with_the_static_challenge(
    scepclient, live_scep, make_template, rsa_ca, tmp_path
):
    template = make_template(ChallengeType.STATIC, ca=rsa_ca, allow_single_des=True)

    run = run_scepclient(
        scepclient,
        live_scep.url + endpoint_path(template),
        tmp_path,
        "-challenge",
        STATIC_CHALLENGE,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert_verifies_against(tmp_path, rsa_ca)
    issued = saved_certificate(tmp_path)
    row = Certificate.objects.get()
    assert row.fingerprint_sha256 == issued.fingerprint(hashes.SHA256()).hex()
    assert (row.template, row.source, row.status) == (template, "scep", "active")
    assert issued.subject.rfc4514_string() == "CN=scep device,O=mdmcerts tests"
    assert ("POST", "PKIOperation") in live_scep.requests
    assert ("GET", "PKIOperation") not in live_scep.requests


def test_scepclient_enrolls_with_a_dynamic_challenge_from_mint_challenge(
    scepclient, live_scep, make_template, rsa_ca, device, tmp_path
):
    template = make_template(
        ChallengeType.DYNAMIC, ca=rsa_ca, subject="O=Zylker,CN=$DEVICE_SN$", allow_single_des=True
    )
    printed = io.StringIO()
    call_command(
        "mint_challenge", "--template", template.slug, "--device", device.pk, stdout=printed
    )

    run = run_scepclient(
        scepclient,
        live_scep.url + endpoint_path(template),
        tmp_path,
        "-challenge",
        printed.getvalue().strip(),
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert_verifies_against(tmp_path, rsa_ca)
    row = Certificate.objects.get()
    assert row.device == device
    assert row.certificate == saved_certificate(tmp_path)
    assert saved_certificate(tmp_path).subject.rfc4514_string() == f"CN={DEVICE_SERIAL},O=Zylker"
    assert Challenge.objects.get().used_at is not None
    assert ("POST", "PKIOperation") in live_scep.requests


def test_a_template_without_the_single_des_opt_in_refuses_scepclient(
    scepclient, live_scep, make_template, rsa_ca, tmp_path
):
    template = make_template(ChallengeType.STATIC, ca=rsa_ca)

    run = run_scepclient(
        scepclient,
        live_scep.url + endpoint_path(template),
        tmp_path,
        "-challenge",
        STATIC_CHALLENGE,
    )

    assert (run.returncode, run.stdout.strip()) == (
        1,
        "PKCSReq (19) request failed, failInfo: badAlg (0)",
    ), run.stderr
    assert ("POST", "PKIOperation") in live_scep.requests
    assert not (tmp_path / "client.pem").exists()
    assert not Certificate.objects.exists()
    assert not CertificateRequest.objects.exists()
    assert list(
        AuditEvent.objects.filter(action="issue_failed").values_list("message", flat=True)
    ) == ["SCEP: single DES is not accepted"]
