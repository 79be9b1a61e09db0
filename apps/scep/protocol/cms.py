"""CMS SignedData with SCEP's authenticated attributes, read and written with asn1crypto.

``cryptography`` cannot build or verify SignedData with custom signed attributes, so
this module does: it signs the DER of the attribute SET and verifies exactly the bytes
a client signed (their order is kept; some clients do not sort them).
"""

import datetime
import functools
from dataclasses import dataclass, field

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from apps.scep.protocol.constants import (
    OID_CONTENT_TYPE,
    OID_DATA,
    OID_MD5,
    OID_MESSAGE_DIGEST,
    OID_SIGNED_DATA,
    OID_SIGNING_TIME,
    DigestAlgorithm,
    FailInfo,
)
from apps.scep.protocol.der import check_der, der_set_of, encode_tlv
from apps.scep.protocol.errors import MalformedMessage, ProtocolError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# signatureAlgorithm OIDs seen in SignerInfos: key type, and the digest they name if any.
_SIGNATURE_ALGORITHMS: dict[str, tuple[str, DigestAlgorithm | None]] = {
    "1.2.840.113549.1.1.1": ("rsa", None),
    "1.2.840.113549.1.1.5": ("rsa", DigestAlgorithm.SHA1),
    "1.2.840.113549.1.1.11": ("rsa", DigestAlgorithm.SHA256),
    "1.2.840.113549.1.1.13": ("rsa", DigestAlgorithm.SHA512),
    "1.2.840.10045.2.1": ("ec", None),
    "1.2.840.10045.4.1": ("ec", DigestAlgorithm.SHA1),
    "1.2.840.10045.4.3.2": ("ec", DigestAlgorithm.SHA256),
    "1.2.840.10045.4.3.4": ("ec", DigestAlgorithm.SHA512),
}
_EC_SIGNATURE_OIDS = {
    DigestAlgorithm.SHA1: "1.2.840.10045.4.1",
    DigestAlgorithm.SHA256: "1.2.840.10045.4.3.2",
    DigestAlgorithm.SHA512: "1.2.840.10045.4.3.4",
}
MAX_CERTIFICATES = 16
_DER = Encoding.DER
_VERSION_1 = b"\x02\x01\x01"  # INTEGER 1
_SIGNED_DATA_OID = core.ObjectIdentifier(OID_SIGNED_DATA).dump()
_DATA_OID = core.ObjectIdentifier(OID_DATA).dump()


@dataclass
class SignedMessage:
    """A parsed SignedData with one signer, its attributes as raw DER values."""

    signer_info: cms.SignerInfo
    attributes: dict[str, list[bytes]]
    content: bytes | None
    content_type: str
    certificates: list[asn1_x509.Certificate] = field(default_factory=list)

    def attribute(self, oid: str) -> bytes | None:
        """The single value of attribute ``oid``; None if absent."""
        values = self.attributes.get(oid)
        if values is None:
            return None
        if len(values) != 1:
            raise ProtocolError(FailInfo.BAD_REQUEST, "an attribute has several values")
        return values[0]

    def signing_time(self) -> datetime.datetime | None:
        """The signingTime attribute; None when absent or unreadable."""
        raw = self.attributes.get(OID_SIGNING_TIME)
        if not raw or len(raw) != 1:
            return None
        try:
            value = cms.Time.load(raw[0]).native
        except ValueError:
            return None
        return value if isinstance(value, datetime.datetime) else None


def load_signed_message(der: bytes) -> SignedMessage:
    """Parse a ContentInfo holding a SignedData with exactly one signer."""
    check_der(der)
    info = cms.ContentInfo.load(der)
    if info["content_type"].dotted != OID_SIGNED_DATA:
        raise MalformedMessage("the message is not a CMS SignedData")
    signed_data = info["content"]
    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) != 1:
        raise MalformedMessage("the message does not have exactly one signer")
    signer_info = signer_infos[0]
    encap = signed_data["encap_content_info"]
    content = encap["content"]
    return SignedMessage(
        signer_info=signer_info,
        attributes=_read_attributes(signer_info),
        content=None if isinstance(content, core.Void) else bytes(content.native),
        content_type=encap["content_type"].dotted,
        certificates=_read_certificates(signed_data),
    )


def _read_attributes(signer_info: cms.SignerInfo) -> dict[str, list[bytes]]:
    signed_attrs = signer_info["signed_attrs"]
    if not isinstance(signed_attrs, core.Void):
        read = _read_der_attributes(signed_attrs.contents)
        if read:
            return read
    # Anything unusual (and every error message) is asn1crypto's to decide, as before.
    if isinstance(signed_attrs, core.Void) or not len(signed_attrs):
        raise MalformedMessage("the message has no authenticated attributes")
    attributes: dict[str, list[bytes]] = {}
    for attribute in signed_attrs:
        oid = attribute["type"].dotted
        if oid in attributes:
            raise MalformedMessage("an authenticated attribute appears twice")
        attributes[oid] = [value.dump() for value in attribute["values"]]
    return attributes


# Attribute types read directly, with the tags asn1crypto's CMSAttribute would require;
# other types asn1crypto knows are left to it, those it does not (SCEP's) are Any.
_DIRECT_ATTRIBUTE_TAGS = {
    OID_CONTENT_TYPE: (0x06,),
    OID_MESSAGE_DIGEST: (0x04,),
    OID_SIGNING_TIME: (0x17, 0x18),
}
_KNOWN_TO_ASN1CRYPTO = set(cms.CMSAttributeType._map)
_UNIVERSAL_TAGS = set(core._UNIVERSAL_SPECS)


def _read_der_attributes(contents: bytes) -> dict[str, list[bytes]] | None:
    """The attributes of a signed-attributes SET in plain DER, read without building
    asn1crypto objects (the hot part of every request); None when anything is unusual
    (BER, an unexpected shape or tag, a repeated type), for asn1crypto to judge."""
    attributes: dict[str, list[bytes]] = {}
    for tag, _, start, end in _tlvs(contents, 0, len(contents)) or ():
        parts = _tlvs(contents, start, end) if tag == 0x30 else None
        if parts is None or len(parts) != 2 or parts[0][0] != 0x06 or parts[1][0] != 0x31:
            return None
        oid = _dotted(contents[parts[0][1] : parts[0][3]])
        values = _tlvs(contents, parts[1][2], parts[1][3])
        if oid is None or values is None or oid in attributes:
            return None
        allowed = _DIRECT_ATTRIBUTE_TAGS.get(oid)
        if allowed is None and oid in _KNOWN_TO_ASN1CRYPTO:
            return None
        if any(value[0] & 0x1F not in _UNIVERSAL_TAGS or value[0] & 0xC0 for value in values):
            return None  # a tag asn1crypto cannot read as Any: it decides
        if allowed is not None and any(value[0] not in allowed for value in values):
            return None
        attributes[oid] = [contents[value[1] : value[3]] for value in values]
    return attributes


def _tlvs(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]] | None:
    """(tag, offset, contents offset, end) of each TLV in ``data[start:end]``: definite
    DER lengths and one-octet tags only, else None."""
    found = []
    pos = start
    while pos < end:
        tag = data[pos]
        if tag & 0x1F == 0x1F or pos + 1 >= end:
            return None
        length = data[pos + 1]
        head = pos + 2
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 4 or head + count > end:
                return None
            length = int.from_bytes(data[head : head + count], "big")
            head += count
        if head + length > end:
            return None
        found.append((tag, pos, head, head + length))
        pos = head + length
    return found


@functools.lru_cache(maxsize=256)
def _dotted(oid_der: bytes) -> str | None:
    try:
        return core.ObjectIdentifier.load(oid_der, strict=True).dotted
    except ValueError:
        return None


def _read_certificates(signed_data: cms.SignedData) -> list[asn1_x509.Certificate]:
    choices = signed_data["certificates"]
    if isinstance(choices, core.Void):
        return []
    if len(choices) > MAX_CERTIFICATES:
        raise MalformedMessage("the message holds too many certificates")
    return [choice.chosen for choice in choices if choice.name == "certificate"]


def find_signer(
    message: SignedMessage, candidates: list[asn1_x509.Certificate]
) -> asn1_x509.Certificate | None:
    """The certificate among ``candidates`` that the SignerInfo's sid names."""
    sid = message.signer_info["sid"]
    for certificate in candidates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            # Identical encodings are the common case; Name's own comparison (RFC 5280
            # rules: case, whitespace, string types) decides the rest.
            if certificate.serial_number == wanted["serial_number"].native and (
                certificate.issuer.dump() == wanted["issuer"].dump()
                or certificate.issuer == wanted["issuer"]
            ):
                return certificate
        elif certificate.key_identifier == sid.chosen.native:
            return certificate
    return None


def signer_digest(message: SignedMessage) -> DigestAlgorithm:
    """The SignerInfo's digest algorithm, refusing MD5 and anything unknown (badAlg)."""
    oid = message.signer_info["digest_algorithm"]["algorithm"].dotted
    if oid == OID_MD5:
        raise ProtocolError(FailInfo.BAD_ALG, "MD5 is not accepted")
    try:
        digest = DigestAlgorithm(oid)
    except ValueError:
        raise ProtocolError(FailInfo.BAD_ALG, "the digest algorithm is not supported") from None
    signature_oid = message.signer_info["signature_algorithm"]["algorithm"].dotted
    kind, named = _SIGNATURE_ALGORITHMS.get(signature_oid, (None, None))
    if kind is None or named not in (None, digest):
        raise ProtocolError(FailInfo.BAD_ALG, "the signature algorithm is not supported")
    return digest


def verify_signed_message(
    message: SignedMessage, certificate: x509.Certificate, digest: DigestAlgorithm
) -> None:
    """Check the signature over the signed attributes and the content digest.

    Raises ``ProtocolError(BAD_MESSAGE_CHECK)`` on any mismatch.
    """
    if message.attribute(OID_CONTENT_TYPE) != core.ObjectIdentifier(message.content_type).dump():
        raise ProtocolError(FailInfo.BAD_MESSAGE_CHECK, "the contentType attribute is wrong")
    expected = _hash(digest, message.content or b"")
    if message.attribute(OID_MESSAGE_DIGEST) != core.OctetString(expected).dump():
        raise ProtocolError(FailInfo.BAD_MESSAGE_CHECK, "the message digest does not match")
    signed = encode_tlv(0x31, message.signer_info["signed_attrs"].contents)
    signature = message.signer_info["signature"].native
    if not _signature_valid(certificate.public_key(), signature, signed, digest):
        raise ProtocolError(FailInfo.BAD_MESSAGE_CHECK, "the signature does not verify")


def _signature_valid(public_key, signature: bytes, data: bytes, digest: DigestAlgorithm) -> bool:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), digest.hash_algorithm())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(digest.hash_algorithm()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _hash(digest: DigestAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(digest.hash_algorithm())
    hasher.update(data)
    return hasher.finalize()


def encode_attribute(oid: str, value: core.Asn1Value) -> bytes:
    """One DER Attribute: SEQUENCE { type, SET { value } }."""
    return encode_tlv(0x30, _oid_der(oid) + der_set_of([value.dump()]))


@functools.lru_cache(maxsize=64)
def _oid_der(oid: str) -> bytes:
    return core.ObjectIdentifier(oid).dump()


def sign_message(
    *,
    content: bytes | None,
    attributes: list[bytes],
    certificate: x509.Certificate,
    key: PrivateKey,
    digest: DigestAlgorithm,
) -> bytes:
    """A ContentInfo(SignedData) over ``content`` (data) with one signer, ``certificate``.

    ``attributes`` are encoded SCEP attributes; contentType, messageDigest and
    signingTime are added here. The certificate is included in the SignedData.
    """
    # Every CertRep is built here, so the DER is assembled directly: building it through
    # asn1crypto's object tree cost twice the RSA signature. The parts that depend only on
    # the certificate, key type and digest are encoded once by asn1crypto and cached.
    signed_attrs = der_set_of(
        [
            *attributes,
            encode_attribute(OID_CONTENT_TYPE, core.ObjectIdentifier(OID_DATA)),
            encode_attribute(OID_MESSAGE_DIGEST, core.OctetString(_hash(digest, content or b""))),
            encode_attribute(OID_SIGNING_TIME, _now()),
        ]
    )
    certificate_der = certificate.public_bytes(_DER)
    signed_data = [
        _VERSION_1,
        encode_tlv(0x31, _digest_algorithm_der(digest)),
        _encap_content_info(content),
        encode_tlv(0xA0, certificate_der),  # certificates [0] IMPLICIT SET OF
        encode_tlv(0x31, _signer_info(signed_attrs, certificate_der, key, digest)),
    ]
    return encode_tlv(
        0x30, _SIGNED_DATA_OID + encode_tlv(0xA0, encode_tlv(0x30, b"".join(signed_data)))
    )


def _encap_content_info(content: bytes | None) -> bytes:
    """EncapsulatedContentInfo of type data, with ``content`` as [0] EXPLICIT OCTET STRING."""
    if content is None:
        return encode_tlv(0x30, _DATA_OID)
    return encode_tlv(0x30, _DATA_OID + encode_tlv(0xA0, encode_tlv(0x04, content)))


def _now() -> cms.Time:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return cms.Time({"utc_time" if now.year < 2050 else "generalized_time": now})


def _signer_info(
    signed_attrs: bytes, certificate_der: bytes, key: PrivateKey, digest: DigestAlgorithm
) -> bytes:
    """SignerInfo v1 naming the certificate by issuer and serial, signing the DER of the
    attribute SET (it is sent [0]-tagged, RFC 5652 section 5.4)."""
    signature_algorithm = _signature_algorithm_der(_key_kind(key), digest)
    fields = [
        _VERSION_1,
        _issuer_and_serial_der(certificate_der),
        _digest_algorithm_der(digest),
        b"\xa0" + signed_attrs[1:],  # the same SET, tagged [0] IMPLICIT
        signature_algorithm,
        encode_tlv(0x04, _sign(key, signed_attrs, digest)),
    ]
    return encode_tlv(0x30, b"".join(fields))


def _key_kind(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec"
    raise TypeError("only RSA and EC keys can sign SCEP messages")


@functools.cache
def _signature_algorithm_der(kind: str, digest: DigestAlgorithm) -> bytes:
    if kind == "rsa":
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()
    return algos.SignedDigestAlgorithm({"algorithm": _EC_SIGNATURE_OIDS[digest]}).dump()


@functools.cache
def _digest_algorithm_der(digest: DigestAlgorithm) -> bytes:
    return algos.DigestAlgorithm({"algorithm": digest.value}).dump()


@functools.lru_cache(maxsize=16)
def _issuer_and_serial_der(certificate_der: bytes) -> bytes:
    """IssuerAndSerialNumber of a certificate (the RA's, nearly always: cached)."""
    certificate = asn1_x509.Certificate.load(certificate_der)
    return cms.IssuerAndSerialNumber(
        {"issuer": certificate.issuer, "serial_number": certificate.serial_number}
    ).dump()


def _sign(key: PrivateKey, data: bytes, digest: DigestAlgorithm) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest.hash_algorithm())
    return key.sign(data, ec.ECDSA(digest.hash_algorithm()))


def degenerate_signed_data(
    certificates: list[x509.Certificate], crls: list[bytes] | tuple[bytes, ...] = ()
) -> bytes:
    """A certificates-only SignedData (no signer, no content) with certificates and CRLs."""
    data: dict = {
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": "data"},
        "signer_infos": [],
    }
    if certificates:
        data["certificates"] = [
            asn1_x509.Certificate.load(cert.public_bytes(_DER)) for cert in certificates
        ]
    if crls:
        data["crls"] = [cms.RevocationInfoChoice.load(crl) for crl in crls]
    return _content_info(data)


def read_degenerate(der: bytes) -> tuple[list[x509.Certificate], list[bytes]]:
    """Certificates and CRLs (DER) of a certificates-only SignedData."""
    check_der(der)
    info = cms.ContentInfo.load(der)
    if info["content_type"].dotted != OID_SIGNED_DATA:
        raise MalformedMessage("the content is not a certificates-only SignedData")
    signed_data = info["content"]
    certificates = [
        x509.load_der_x509_certificate(certificate.dump())
        for certificate in _read_certificates(signed_data)
    ]
    crls = signed_data["crls"]
    crl_ders = [] if isinstance(crls, core.Void) else [crl.chosen.dump() for crl in crls]
    return certificates, crl_ders


def to_cryptography(certificate: asn1_x509.Certificate) -> x509.Certificate:
    """The same certificate as a ``cryptography`` object."""
    return x509.load_der_x509_certificate(certificate.dump())


def _content_info(signed_data: dict) -> bytes:
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
