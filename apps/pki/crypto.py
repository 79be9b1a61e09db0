"""X.509 helpers on top of ``cryptography``: keys, names, fingerprints, encodings."""

import re
from collections.abc import Iterable
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from apps.core import secrets
from apps.pki.choices import KeyAlgorithm, SignatureHash

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

RSA_SIZES = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_3072: 3072, KeyAlgorithm.RSA_4096: 4096}
EC_CURVES = {KeyAlgorithm.EC_P256: ec.SECP256R1, KeyAlgorithm.EC_P384: ec.SECP384R1}
KEY_STRENGTH = {
    KeyAlgorithm.RSA_2048: ("rsa", 2048),
    KeyAlgorithm.RSA_3072: ("rsa", 3072),
    KeyAlgorithm.RSA_4096: ("rsa", 4096),
    KeyAlgorithm.EC_P256: ("ec", 256),
    KeyAlgorithm.EC_P384: ("ec", 384),
}
HASHES = {
    SignatureHash.SHA256: hashes.SHA256,
    SignatureHash.SHA384: hashes.SHA384,
    SignatureHash.SHA512: hashes.SHA512,
}

# Attribute names accepted in subject patterns (case-insensitive), with the short name
# used when a name is shown.
NAME_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "SURNAME": NameOID.SURNAME,
    "STREET": NameOID.STREET_ADDRESS,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "INITIALS": NameOID.INITIALS,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
}
SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.TITLE: "T",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.INITIALS: "initials",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.DN_QUALIFIER: "dnQualifier",
}
_OID_RE = re.compile(r"^\d+(\.\d+)+$")


class NameSyntaxError(ValueError):
    """A distinguished-name pattern that cannot be parsed."""


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm in RSA_SIZES:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_SIZES[algorithm])
    if algorithm in EC_CURVES:
        return ec.generate_private_key(EC_CURVES[algorithm]())
    raise ValueError(f"unsupported key algorithm {algorithm!r}")


def key_algorithm_of(public_key) -> str | None:
    """The ``KeyAlgorithm`` of a public key, or None for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return {
            2048: KeyAlgorithm.RSA_2048,
            3072: KeyAlgorithm.RSA_3072,
            4096: KeyAlgorithm.RSA_4096,
        }.get(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyAlgorithm.EC_P256, "secp384r1": KeyAlgorithm.EC_P384}.get(
            public_key.curve.name
        )
    return None


def key_strength(public_key) -> tuple[str, int]:
    """``("rsa"|"ec"|other, bits)`` for comparing a CSR's key with a template's minimum."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec", public_key.curve.key_size
    return type(public_key).__name__, 0


def signature_hash(name: str) -> hashes.HashAlgorithm:
    return HASHES[name]()


def parse_name_pattern(pattern: str) -> list[tuple[x509.ObjectIdentifier, str]]:
    """``"C=US,O=Zylker,CN=x"`` -> [(oid, value), ...] in the order written.

    The order written is the encoding order (most significant first), as the MDM
    consoles show it. Values are not yet rendered (they may hold variables).
    """
    if not pattern.strip():
        raise NameSyntaxError("the subject is empty")
    attributes = []
    for part in _split_rdns(pattern):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise NameSyntaxError(f"{part.strip()!r} is not of the form NAME=value")
        oid = NAME_ATTRIBUTES.get(key.upper())
        if oid is None and _OID_RE.match(key):
            oid = x509.ObjectIdentifier(key)
        if oid is None:
            raise NameSyntaxError(
                f"unknown attribute {key!r} (use C, ST, L, O, OU, CN, E, DC, UID …)"
            )
        attributes.append((oid, value.strip()))
    return attributes


def _split_rdns(pattern: str) -> list[str]:
    # A backslash escapes the next character, so "Doe\, John" stays one value.
    parts, current, escaped = [], [], False
    for char in pattern:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\":
            escaped = True
            continue
        if char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if escaped:
        raise NameSyntaxError("the subject ends with a lone backslash")
    parts.append("".join(current))
    return [p for p in parts if p.strip()] or [""]


def build_name(attributes: Iterable[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    """An ``x509.Name`` with one attribute per RDN, in the order given."""
    try:
        return x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)])
                for oid, value in attributes
            ]
        )
    except ValueError as exc:
        raise NameSyntaxError(str(exc)) from exc


def format_name(name: x509.Name) -> str:
    """A name in encoding order, ``C=US,O=Zylker,CN=x``, as the consoles write it."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            label = SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
            value = str(attr.value).replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{label}={value}")
    return ",".join(parts)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def colon_hex(value: str) -> str:
    return ":".join(value[i : i + 2] for i in range(0, len(value), 2)).upper()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def crl_pem(der: bytes) -> str:
    """A DER CRL as PEM (``-----BEGIN X509 CRL-----``)."""
    crl = x509.load_der_x509_crl(der)
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def load_pem_certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def private_key_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(serialization.Encoding.DER, spki) == (
        cert.public_key().public_bytes(serialization.Encoding.DER, spki)
    )


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI matching the issuer's own SKI when it has one (imported CAs may use another method)."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def key_usage(**granted: bool) -> x509.KeyUsage:
    """A KeyUsage with the named bits set, e.g. ``key_usage(key_cert_sign=True)``."""
    bits = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    unknown = set(granted) - set(bits)
    if unknown:
        raise ValueError(f"unknown key usage bits: {sorted(unknown)}")
    return x509.KeyUsage(**{**bits, **granted})


@lru_cache(maxsize=64)
def load_stored_key(token: str, *, context: str) -> PrivateKey:
    """A private key from its encrypted store, kept decrypted in this process's memory.

    Decrypting and parsing an RSA key costs tens of milliseconds (the parse checks the
    key's consistency), too much for every signature. The cache is keyed by the ciphertext,
    so a rewrapped or replaced key is loaded afresh. The consistency check is skipped here
    because the key was checked when it entered mdmcerts and AES-GCM authenticates it since.
    """
    der = secrets.decrypt(token, context=context)
    return serialization.load_der_private_key(
        der, password=None, unsafe_skip_rsa_key_validation=True
    )
