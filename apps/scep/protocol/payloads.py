"""The messageData of CertPoll, GetCert and GetCRL, and the CSR's challengePassword."""

from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from apps.scep.protocol.constants import OID_CHALLENGE_PASSWORD, FailInfo
from apps.scep.protocol.der import check_der, encode_tlv
from apps.scep.protocol.errors import ProtocolError


@dataclass(frozen=True)
class IssuerAndSubject:
    """CertPoll (GetCertInitial) messageData: the CA and the subject that was requested."""

    issuer: x509.Name
    subject: x509.Name


@dataclass(frozen=True)
class IssuerAndSerial:
    """GetCert and GetCRL messageData: a certificate by its issuer and serial number."""

    issuer: x509.Name
    serial: int


class _IssuerAndSubjectASN1(core.Sequence):
    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


def encode_issuer_and_subject(issuer: x509.Name, subject: x509.Name) -> bytes:
    """DER of IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name }."""
    return encode_tlv(0x30, issuer.public_bytes() + subject.public_bytes())


def encode_issuer_and_serial(issuer: x509.Name, serial: int) -> bytes:
    """DER of IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }."""
    return encode_tlv(0x30, issuer.public_bytes() + core.Integer(serial).dump())


def decode_issuer_and_subject(der: bytes) -> IssuerAndSubject:
    """Parse an IssuerAndSubject (any failure raises)."""
    check_der(der)
    value = _IssuerAndSubjectASN1.load(der, strict=True)
    return IssuerAndSubject(issuer=_name(value["issuer"]), subject=_name(value["subject"]))


def decode_issuer_and_serial(der: bytes) -> IssuerAndSerial:
    """Parse an IssuerAndSerialNumber (any failure raises)."""
    check_der(der)
    value = cms.IssuerAndSerialNumber.load(der, strict=True)
    return IssuerAndSerial(issuer=_name(value["issuer"]), serial=value["serial_number"].native)


def _name(name: asn1_x509.Name) -> x509.Name:
    rdns = []
    for rdn in name.chosen:
        attributes = []
        for type_and_value in rdn:
            value = type_and_value["value"].native
            if not isinstance(value, str):
                raise ValueError("a name attribute is not a string")
            oid = x509.ObjectIdentifier(type_and_value["type"].dotted)
            attributes.append(x509.NameAttribute(oid, value))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def challenge_password(csr_der: bytes) -> str | None:
    """The CSR's challengePassword attribute as text, or None when it has none.

    Read with asn1crypto: ``cryptography`` gives the raw octets but not their string type.
    """
    request = asn1_csr.CertificationRequest.load(csr_der)
    for attribute in request["certification_request_info"]["attributes"]:
        if attribute["type"].dotted != OID_CHALLENGE_PASSWORD:
            continue
        try:
            (value,) = attribute["values"]
            password = value.native
        except (ValueError, TypeError):
            password = None
        if not isinstance(password, str):
            raise ProtocolError(FailInfo.BAD_REQUEST, "the challengePassword cannot be read")
        return password
    return None
