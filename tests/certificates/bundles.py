"""PKCS#12 files as users bring them: made with cryptography or the openssl CLI, and
hostile ones (huge iteration counts, two keys, a key hidden in an encrypted container)."""

import datetime
import os
import secrets
from pathlib import Path

from asn1crypto import algos, cms, core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.factories import make_key, self_signed_ca
from tests.openssl import openssl

PASSWORD = "correct horse 7"


def issuer() -> tuple:
    """A CA outside mdmcerts (key, certificate), as a user's certificate provider."""
    key = make_key("ec-p256")
    return key, self_signed_ca(key, days=3650)


def user_certificate(
    key,
    *,
    email: str = "alice@example.com",
    ca: tuple | None = None,
    starts_in_days: int = -1,
    days: int = 365,
) -> x509.Certificate:
    """An S/MIME-style certificate for ``key``, issued by ``ca`` (or self-signed)."""
    ca_key, ca_cert = ca if ca is not None else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{email} {secrets.token_hex(3)}"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]
    )
    start = now + datetime.timedelta(days=starts_in_days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject if ca_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def bundle(
    key=None,
    cert: x509.Certificate | None = None,
    *,
    cas: list[x509.Certificate] = (),
    password: str = PASSWORD,
    legacy: bool = False,
    iterations: int = 2048,
) -> bytes:
    """A PKCS#12 made with cryptography: AES-256/PBKDF2 and an HMAC-SHA256 MAC, or the
    3DES/SHA-1 scheme older exporters use (``legacy``)."""
    key = key or make_key("ec-p256")
    cert = cert or user_certificate(key)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(iterations)
    if legacy:
        legacy_mac = hashes.SHA1()  # noqa: S303 (what legacy exporters write)
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
            legacy_mac
        )
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
            hashes.SHA256()
        )
    return pkcs12.serialize_key_and_certificates(
        b"mine", key, cert, list(cas) or None, builder.build(password.encode())
    )


def openssl_bundle(
    key, cert: x509.Certificate, tmp: Path, *, password: str = PASSWORD, legacy: bool = False
) -> bytes:
    """A PKCS#12 exported by the openssl CLI (``-legacy``: RC2-40 certificates, 3DES key)."""
    key_path, cert_path, out = tmp / "key.pem", tmp / "cert.pem", tmp / "out.p12"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    args = ["pkcs12", "-export", "-inkey", str(key_path), "-in", str(cert_path)]
    args += ["-out", str(out), "-passout", f"pass:{password}"]
    result = openssl(*args, *(["-legacy"] if legacy else []))
    assert result.returncode == 0, result.stderr.decode()
    return out.read_bytes()


def with_iterations(
    data: bytes, *, mac: int | None = None, key: int | None = None, certs: int | None = None
) -> bytes:
    """``data`` with the MAC's, the private key's or the certificate container's iteration
    count rewritten in its DER (nothing re-encrypted: a check that reads the count first
    refuses it; anything that derives a key with it would take minutes)."""
    pfx = asn1_pkcs12.Pfx.load(data)
    contents = []
    for info in pfx.authenticated_safe:
        if info["content_type"].native == "data" and key is not None:
            bags = asn1_pkcs12.SafeContents.load(info["content"].native)
            for bag in bags:
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    _set_count(bag["bag_value"]["encryption_algorithm"], key)
            info = cms.ContentInfo({"content_type": "data", "content": bags.dump(force=True)})
        elif info["content_type"].native == "encrypted_data" and certs is not None:
            encrypted = info["content"]["encrypted_content_info"]
            _set_count(encrypted["content_encryption_algorithm"], certs)
        contents.append(info)
    return _repack(pfx, contents, mac=mac)


def _set_count(algorithm: algos.EncryptionAlgorithm, count: int) -> None:
    if algorithm["algorithm"].native == "pbes2":
        algorithm["parameters"]["key_derivation_func"]["parameters"]["iteration_count"] = count
    else:
        algorithm["parameters"]["iterations"] = count


def _repack(pfx: asn1_pkcs12.Pfx, contents: list, *, mac: int | None = None) -> bytes:
    safe = asn1_pkcs12.AuthenticatedSafe(contents).dump(force=True)
    pfx["auth_safe"] = cms.ContentInfo({"content_type": "data", "content": safe})
    if mac is not None:
        pfx["mac_data"]["iterations"] = mac
    return pfx.dump(force=True)


def with_second_key(data: bytes) -> bytes:
    """``data`` with a second (unencrypted) private key bag beside the first."""
    pfx = asn1_pkcs12.Pfx.load(data)
    extra = make_key("ec-p256").private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    bag = asn1_pkcs12.SafeBag(
        {"bag_id": "key_bag", "bag_value": asn1_pkcs12.PrivateKeyInfo.load(extra)}
    )
    contents = list(pfx.authenticated_safe)
    contents.append(
        cms.ContentInfo({"content_type": "data", "content": asn1_pkcs12.SafeContents([bag]).dump()})
    )
    return _repack(pfx, contents)


def with_hidden_key(data: bytes, *, password: str = PASSWORD, key_iterations: int) -> bytes:
    """``data`` plus an encrypted container (PBES2, 2048 iterations) holding a private key
    whose own encryption asks for ``key_iterations``: visible only once the container is
    opened."""
    extra = make_key("ec-p256").private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"irrelevant"),
    )
    shrouded = asn1_pkcs12.EncryptedPrivateKeyInfo.load(extra)
    _set_count(shrouded["encryption_algorithm"], key_iterations)
    bag = asn1_pkcs12.SafeBag({"bag_id": "pkcs8_shrouded_key_bag", "bag_value": shrouded})
    plain = asn1_pkcs12.SafeContents([bag]).dump()
    contents = list(asn1_pkcs12.Pfx.load(data).authenticated_safe)
    contents.append(_encrypted_container(plain, password))
    return _repack(asn1_pkcs12.Pfx.load(data), contents)


def _encrypted_container(plain: bytes, password: str) -> cms.ContentInfo:
    salt, iv, iterations = os.urandom(8), os.urandom(16), 2048
    key = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(
        password.encode()
    )
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    algorithm = algos.EncryptionAlgorithm(
        {
            "algorithm": "pbes2",
            "parameters": {
                "key_derivation_func": {
                    "algorithm": "pbkdf2",
                    "parameters": {
                        "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                        "iteration_count": iterations,
                        "prf": {"algorithm": "sha256", "parameters": core.Null()},
                    },
                },
                "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
            },
        }
    )
    return cms.ContentInfo(
        {
            "content_type": "encrypted_data",
            "content": {
                "version": "v0",
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": algorithm,
                    "encrypted_content": ciphertext,
                },
            },
        }
    )
