"""``manage.py init_ca``: generate a root or an intermediate, import PKCS#12 or PEM."""

import os
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm, SignatureHash
from apps.pki.models import CertificateAuthority
from tests.factories import self_signed_ca

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def init_ca(*args: str) -> str:
    out = StringIO()
    call_command("init_ca", *args, stdout=out)
    return out.getvalue()


def external_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA made elsewhere: its key and self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Elsewhere"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Elsewhere Root CA"),
        ]
    )
    cert = self_signed_ca(key, name=name)
    return key, cert


def write_pem_identity(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    key, cert = external_ca()
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return cert_file, key_file, cert


def write_pkcs12(tmp_path: Path) -> tuple[Path, x509.Certificate]:
    """A PKCS#12 file as ``openssl pkcs12 -export`` writes it (OpenSSL's own defaults)."""
    cert_file, key_file, cert = write_pem_identity(tmp_path)
    p12 = tmp_path / "ca.p12"
    result = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            "-in",
            str(cert_file),
            "-inkey",
            str(key_file),
            "-passin",
            "env:P12_PASSWORD",
            "-passout",
            "env:P12_PASSWORD",
            "-out",
            str(p12),
        ],
        env={**os.environ, "P12_PASSWORD": PASSWORD},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return p12, cert


def verify_with_openssl(cert_pem: str, root_pem: str, tmp_path: Path) -> str:
    (tmp_path / "root.pem").write_text(root_pem)
    (tmp_path / "cert.pem").write_text(cert_pem)
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            str(tmp_path / "root.pem"),
            str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_it_generates_a_root_ca_and_prints_slug_subject_and_fingerprint():
    output = init_ca("--name", "Zylker Root", "--subject", "C=US,O=Zylker,CN=Zylker Root CA")

    ca = CertificateAuthority.objects.get()
    assert output.splitlines() == [
        "slug: zylker-root",
        "subject: C=US,O=Zylker,CN=Zylker Root CA",
        f"fingerprint (SHA-256): {crypto.colon_hex(ca.fingerprint_sha256)}",
    ]
    assert ca.name == "Zylker Root" and ca.parent is None
    assert ca.key_algorithm == KeyAlgorithm.EC_P256
    assert ca.certificate.issuer == ca.certificate.subject
    basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length is None
    assert 3640 <= (ca.not_after - ca.not_before).days <= 3655


def test_it_generates_an_intermediate_signed_by_its_parent(tmp_path):
    init_ca("--name", "Zylker Root", "--subject", "O=Zylker,CN=Zylker Root CA")

    init_ca(
        "--name",
        "Zylker Issuing",
        "--slug",
        "issuing",
        "--subject",
        "O=Zylker,CN=Zylker Issuing CA",
        "--parent",
        "zylker-root",
        "--path-length",
        "0",
        "--key-algorithm",
        "rsa2048",
        "--hash",
        "sha384",
        "--validity-years",
        "5",
    )

    root = CertificateAuthority.objects.get(slug="zylker-root")
    issuing = CertificateAuthority.objects.get(slug="issuing")
    assert issuing.parent == root
    assert issuing.path_length == 0
    assert issuing.key_algorithm == KeyAlgorithm.RSA_2048
    assert issuing.signature_hash == SignatureHash.SHA384
    assert isinstance(issuing.certificate.signature_hash_algorithm, hashes.SHA384)
    assert issuing.certificate.issuer == root.certificate.subject
    assert (
        verify_with_openssl(issuing.certificate_pem, root.certificate_pem, tmp_path)
        .strip()
        .endswith(": OK")
    )


def test_it_imports_a_pkcs12_file_with_the_password_from_the_environment(tmp_path, monkeypatch):
    p12, cert = write_pkcs12(tmp_path)
    monkeypatch.setenv("CA_PASSWORD", PASSWORD)

    output = init_ca("--name", "Elsewhere", "--import", str(p12), "--password-env", "CA_PASSWORD")

    ca = CertificateAuthority.objects.get()
    assert ca.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert ca.has_private_key
    assert crypto.public_key_matches(ca.load_private_key(), cert)
    assert "subject: O=Elsewhere,CN=Elsewhere Root CA" in output


def test_it_imports_pem_with_an_encrypted_key_file(tmp_path, monkeypatch):
    cert_file, key_file, cert = write_pem_identity(tmp_path)
    monkeypatch.setenv("CA_PASSWORD", PASSWORD)

    init_ca(
        "--name",
        "Elsewhere",
        "--import",
        str(cert_file),
        "--key",
        str(key_file),
        "--password-env",
        "CA_PASSWORD",
    )

    ca = CertificateAuthority.objects.get()
    assert ca.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert crypto.public_key_matches(ca.load_private_key(), cert)


def test_a_wrong_pkcs12_password_creates_nothing(tmp_path, monkeypatch):
    p12, _ = write_pkcs12(tmp_path)
    monkeypatch.setenv("CA_PASSWORD", "not the password")

    with pytest.raises(CommandError, match="password is wrong"):
        init_ca("--name", "Elsewhere", "--import", str(p12), "--password-env", "CA_PASSWORD")

    assert CertificateAuthority.objects.count() == 0


def test_a_wrong_pem_key_password_creates_nothing(tmp_path, monkeypatch):
    cert_file, key_file, _ = write_pem_identity(tmp_path)
    monkeypatch.setenv("CA_PASSWORD", "not the password")

    with pytest.raises(CommandError, match="wrong password"):
        init_ca(
            "--name",
            "Elsewhere",
            "--import",
            str(cert_file),
            "--key",
            str(key_file),
            "--password-env",
            "CA_PASSWORD",
        )

    assert CertificateAuthority.objects.count() == 0


def test_an_unset_password_variable_is_refused(tmp_path, monkeypatch):
    p12, _ = write_pkcs12(tmp_path)
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)

    with pytest.raises(CommandError, match="NO_SUCH_PASSWORD"):
        init_ca("--name", "Elsewhere", "--import", str(p12), "--password-env", "NO_SUCH_PASSWORD")

    assert CertificateAuthority.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--subject", "XX=nope"], "unknown attribute 'XX'"),
        ([], "Give --subject"),
        (["--subject", "CN=x", "--parent", "missing"], "No CA server with slug 'missing'"),
        (["--subject", "CN=x", "--validity-years", "0"], "between 1 and 50"),
        (["--subject", "CN=x", "--key", "k.pem"], "go with --import"),
        (["--import", "ca.p12", "--subject", "CN=x"], "--subject cannot be used with --import"),
        (["--import", "/nonexistent/ca.p12"], "Cannot read /nonexistent/ca.p12"),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(args, reason):
    with pytest.raises(CommandError, match=reason):
        init_ca("--name", "Bad", *args)

    assert CertificateAuthority.objects.count() == 0


def test_a_name_already_taken_is_refused():
    init_ca("--name", "Zylker Root", "--subject", "CN=Zylker Root CA")

    with pytest.raises(CommandError, match="already exists"):
        init_ca("--name", "Zylker Root", "--subject", "CN=Another")

    assert CertificateAuthority.objects.count() == 1


def test_an_intermediate_below_a_path_length_zero_ca_is_refused():
    init_ca("--name", "Root", "--subject", "CN=Root")
    init_ca(
        "--name", "Issuing", "--subject", "CN=Issuing", "--parent", "root", "--path-length", "0"
    )

    with pytest.raises(CommandError, match="cannot sign other CAs"):
        init_ca("--name", "Too deep", "--subject", "CN=Too deep", "--parent", "issuing")

    assert CertificateAuthority.objects.count() == 2
