"""``manage.py issue_cert``: a certificate the openssl CLI verifies, or a clear refusal."""

import subprocess
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.choices import AuditAction
from apps.audit.models import AuditEvent
from apps.certificates.choices import CertificateSource
from apps.certificates.models import Certificate
from apps.enrollment.choices import SanType
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from tests.factories import force_template, force_user, make_csr, make_key

pytestmark = pytest.mark.django_db


def command(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def chain() -> tuple[CertificateAuthority, CertificateAuthority]:
    """A root and an intermediate, both made by ``init_ca``."""
    command("init_ca", "--name", "Root", "--subject", "O=Zylker,CN=Zylker Root CA")
    command(
        "init_ca",
        "--name",
        "Issuing",
        "--subject",
        "O=Zylker,CN=Zylker Issuing CA",
        "--parent",
        "root",
        "--path-length",
        "0",
    )
    return CertificateAuthority.objects.get(slug="root"), CertificateAuthority.objects.get(
        slug="issuing"
    )


@pytest.fixture
def template(chain):
    return force_template(ca=chain[1], sans=[(SanType.RFC822, "$EMAIL$")])


def write_csr(
    path: Path, algorithm: str = KeyAlgorithm.EC_P256, encoding=serialization.Encoding.PEM
) -> Path:
    path.write_bytes(make_csr(make_key(algorithm)).public_bytes(encoding))
    return path


def test_it_writes_a_certificate_that_openssl_verifies_up_to_the_root(
    chain, template, alice, tmp_path
):
    root, issuing = chain
    csr = write_csr(tmp_path / "req.pem")
    (tmp_path / "root.pem").write_text(root.certificate_pem)
    (tmp_path / "intermediate.pem").write_text(issuing.certificate_pem)

    output = command(
        "issue_cert",
        "--template",
        template.slug,
        "--csr",
        str(csr),
        "--user",
        "alice",
        "--out",
        str(tmp_path / "leaf.pem"),
    )

    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "intermediate.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "leaf.pem: OK"
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    row = Certificate.objects.get()
    assert row.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()
    assert row.source == CertificateSource.MANUAL
    assert row.user == alice and row.template == template and row.ca == issuing
    assert row.subject == "O=mdmcerts tests,CN=alice"
    assert row.subject_alt_names == "email:alice@example.com"
    assert f"Wrote certificate {row.serial}" in output


def test_it_prints_the_pem_on_stdout_and_reads_a_der_csr(template, alice, tmp_path):
    csr = write_csr(tmp_path / "req.der", encoding=serialization.Encoding.DER)

    output = command(
        "issue_cert", "--template", template.slug, "--csr", str(csr), "--user", "alice"
    )

    cert = x509.load_pem_x509_certificate(output.encode())
    assert Certificate.objects.get().fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert output.startswith("-----BEGIN CERTIFICATE-----")


def test_a_key_weaker_than_the_template_says_is_refused(chain, alice, tmp_path):
    template = force_template(ca=chain[1], key_algorithm=KeyAlgorithm.EC_P384)
    csr = write_csr(tmp_path / "req.pem", KeyAlgorithm.RSA_2048)
    out = tmp_path / "leaf.pem"

    with pytest.raises(
        CommandError, match=r"the key must be EC P-384 or stronger \(got RSA 2048\)"
    ):
        command(
            "issue_cert",
            "--template",
            template.slug,
            "--csr",
            str(csr),
            "--user",
            "alice",
            "--out",
            str(out),
        )

    assert Certificate.objects.count() == 0
    assert not out.exists()
    assert AuditEvent.objects.filter(action=AuditAction.ISSUE_FAILED).count() == 1


def test_a_variable_without_a_value_is_refused(template, tmp_path):
    force_user("nomail", email="")
    csr = write_csr(tmp_path / "req.pem")

    with pytest.raises(CommandError, match=r"\$EMAIL\$ \(user's email address\) has no value"):
        command("issue_cert", "--template", template.slug, "--csr", str(csr), "--user", "nomail")

    assert Certificate.objects.count() == 0


def test_an_unreadable_csr_is_refused(template, tmp_path):
    garbage = tmp_path / "req.pem"
    garbage.write_text("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n")

    with pytest.raises(CommandError, match="not a readable CSR"):
        command("issue_cert", "--template", template.slug, "--csr", str(garbage))

    assert Certificate.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--template", "missing"], "No request template with slug 'missing'"),
        (["--user", "nobody"], "No user 'nobody'"),
        (["--csr", "/nonexistent/req.pem"], "Cannot read /nonexistent/req.pem"),
    ],
)
def test_unknown_names_are_refused(template, tmp_path, args, reason):
    options = {"--template": template.slug, "--csr": str(write_csr(tmp_path / "req.pem"))}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))

    with pytest.raises(CommandError, match=reason):
        command("issue_cert", *[item for pair in options.items() for item in pair])

    assert Certificate.objects.count() == 0
