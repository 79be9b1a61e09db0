"""``force_*`` helpers: real objects with random names, for tests."""

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth import get_user_model

from apps.certificates.models import Certificate
from apps.certificates.services import issue_certificate
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from apps.enrollment.variables import values_for_user
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm, SignatureHash
from apps.pki.models import CertificateAuthority
from apps.pki.services import generate_local_ca


def random_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def force_user(username: str | None = None, **fields):
    username = username or random_name("user")
    fields.setdefault("email", f"{username}@example.com")
    return get_user_model().objects.create_user(username=username, password=None, **fields)


def force_ca(
    *,
    parent: CertificateAuthority | None = None,
    key_algorithm: str = KeyAlgorithm.EC_P256,
    path_length: int | None = None,
    subject: str | None = None,
    validity_years: int = 10,
) -> CertificateAuthority:
    name = random_name("ca")
    return generate_local_ca(
        ca=CertificateAuthority(name=name, slug=name),
        subject=subject or f"O=mdmcerts tests,CN={name}",
        key_algorithm=key_algorithm,
        signature_hash=SignatureHash.SHA256,
        validity_years=validity_years,
        parent=parent,
        path_length=path_length,
    )


def force_template(
    *,
    ca: CertificateAuthority | None = None,
    sans: list[tuple[str, str]] = (),
    static_challenge: str = "",
    **fields,
) -> CertificateTemplate:
    name = random_name("template")
    fields.setdefault("subject", "O=mdmcerts tests,CN=$USERID$")
    fields.setdefault("key_algorithm", KeyAlgorithm.EC_P256)
    fields.setdefault("extended_key_usages", ["1.3.6.1.5.5.7.3.2"])
    template = CertificateTemplate(name=name, slug=name, ca=ca or force_ca(), **fields)
    template.set_static_challenge(static_challenge)
    template.save()
    for position, (san_type, value) in enumerate(sans):
        TemplateSubjectAltName.objects.create(
            template=template, san_type=san_type, value=value, position=position
        )
    return template


def make_key(algorithm: str = KeyAlgorithm.EC_P256):
    if algorithm.startswith("rsa"):
        return rsa.generate_private_key(
            public_exponent=65537, key_size=int(algorithm.removeprefix("rsa"))
        )
    return ec.generate_private_key({"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}[algorithm]())


def make_csr(
    key=None,
    *,
    subject: x509.Name | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key or make_key(), hashes.SHA256())


def force_certificate(*, template: CertificateTemplate | None = None, user=None) -> Certificate:
    template = template or force_template()
    user = user or force_user()
    return issue_certificate(make_csr(), template, values_for_user(user), user=user)


def self_signed_ca(
    key, *, ca: bool = True, days: int = 365, name: x509.Name | None = None
) -> x509.Certificate:
    """A CA certificate made outside mdmcerts (to import); ``days`` < 0 is expired."""
    name = name or x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, random_name("ext"))])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(crypto.key_usage(key_cert_sign=ca, crl_sign=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
