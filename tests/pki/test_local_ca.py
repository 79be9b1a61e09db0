import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.exceptions import ValidationError

from apps.audit.services import history_for
from apps.pki.models import CertificateAuthority
from apps.pki.services import generate_local_ca, import_ca
from tests.factories import force_ca, make_key, random_name, self_signed_ca
from tests.openssl import openssl, verify

pytestmark = pytest.mark.django_db


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize(
    "algorithm, key_class, size",
    [
        ("rsa2048", rsa.RSAPublicKey, 2048),
        ("rsa3072", rsa.RSAPublicKey, 3072),
        ("ec-p256", ec.EllipticCurvePublicKey, 256),
        ("ec-p384", ec.EllipticCurvePublicKey, 384),
    ],
)
def test_it_generates_a_root_ca_with_proper_ca_extensions(algorithm, key_class, size):
    ca = force_ca(key_algorithm=algorithm, path_length=1, subject="C=US,O=Zylker,CN=Zylker Root")
    cert = ca.certificate
    assert isinstance(cert.public_key(), key_class) and cert.public_key().key_size == size
    assert cert.subject.rfc4514_string() == "CN=Zylker Root,O=Zylker,C=US"
    assert ca.subject == "C=US,O=Zylker,CN=Zylker Root"
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 1
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert ca.not_after - ca.not_before >= datetime.timedelta(days=3650)
    assert ca.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert ca.private_key.startswith("mdmc1:")
    assert history_for(ca).filter(action="create").count() == 1


@pytest.mark.parametrize(
    "hash_name, hash_class", [("sha384", hashes.SHA384), ("sha512", hashes.SHA512)]
)
def test_it_signs_with_the_chosen_hash(hash_name, hash_class):
    name = random_name("ca")
    ca = generate_local_ca(
        ca=CertificateAuthority(name=name, slug=name),
        subject=f"CN={name}",
        key_algorithm="ec-p384",
        signature_hash=hash_name,
        validity_years=1,
    )
    assert isinstance(ca.certificate.signature_hash_algorithm, hash_class)


def test_an_intermediate_chains_to_its_root_and_never_outlives_it(tmp_path):
    root = force_ca(path_length=1, validity_years=2)
    intermediate = force_ca(parent=root, path_length=0, validity_years=20)
    cert = intermediate.certificate
    assert cert.issuer == root.certificate.subject
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(root.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert intermediate.not_after == root.not_after
    assert ext(cert, x509.BasicConstraints).value.path_length == 0
    assert intermediate.chain() == [cert, root.certificate]
    result = verify(intermediate.certificate_pem, root_pem=root.certificate_pem, tmp=tmp_path)
    assert result.returncode == 0, result.stderr


def test_it_refuses_an_intermediate_below_a_ca_with_path_length_zero():
    root = force_ca(path_length=0)
    before = CertificateAuthority.objects.count()
    with pytest.raises(ValidationError, match="path length"):
        force_ca(parent=root)
    assert CertificateAuthority.objects.count() == before


def new_ca_row() -> CertificateAuthority:
    name = random_name("imported")
    return CertificateAuthority(name=name, slug=name)


def test_it_imports_a_ca_from_pkcs12_and_signs_with_it(tmp_path):
    key = make_key("rsa2048")
    cert = self_signed_ca(key)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(b"secret")
    )
    ca = import_ca(ca=new_ca_row(), data=p12, password="secret")
    assert ca.certificate == cert
    assert ca.key_algorithm == "rsa2048"
    child = force_ca(parent=ca, path_length=0)
    assert verify(child.certificate_pem, root_pem=ca.certificate_pem, tmp=tmp_path).returncode == 0


def test_it_imports_a_ca_from_pem_with_an_encrypted_key_and_links_a_known_issuer():
    root = force_ca()
    key = make_key("ec-p256")
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "External Sub CA")])
        )
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.load_private_key(), hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    ca = import_ca(ca=new_ca_row(), data=cert_pem, key_data=key_pem, password="pw")
    assert ca.parent == root
    assert ca.chain() == [cert, root.certificate]


def p12(key, cert, password: bytes = b"right") -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(password)
    )


def pem(key, cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def weak_ca_p12() -> bytes:
    key = make_key("rsa1024")
    return p12(key, self_signed_ca(key))


KEY = make_key("ec-p256")
BAD_IMPORTS = {
    "wrong password": (lambda: p12(KEY, self_signed_ca(KEY), b"other"), "password"),
    "not a CA": (lambda: p12(KEY, self_signed_ca(KEY, ca=False)), "not a CA certificate"),
    "key mismatch": (lambda: pem(make_key("ec-p256"), self_signed_ca(KEY)), "does not match"),
    "expired": (lambda: p12(KEY, self_signed_ca(KEY, days=-1)), "expired"),
    "garbage": (lambda: b"\x30\x03\x02\x01\x00 not a pkcs12", "Not a PKCS#12"),
    "weak key": (lambda: weak_ca_p12(), "Only RSA 2048"),
}


@pytest.mark.parametrize("problem", BAD_IMPORTS)
def test_it_refuses_a_bad_import_and_creates_nothing(problem):
    make_data, message = BAD_IMPORTS[problem]
    with pytest.raises(ValidationError, match=message):
        import_ca(ca=new_ca_row(), data=make_data(), password="right")
    assert CertificateAuthority.objects.count() == 0


def test_openssl_reads_the_ca_certificate_as_a_ca():
    ca = force_ca(path_length=2)
    text = openssl("x509", "-noout", "-text", input=ca.certificate_pem.encode()).stdout.decode()
    assert "CA:TRUE, pathlen:2" in text
    assert "Certificate Sign, CRL Sign" in text
    assert "X509v3 Subject Key Identifier" in text
