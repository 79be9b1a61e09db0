"""pkcsPKIEnvelope: CMS EnvelopedData to one RSA recipient.

AES-CBC goes through ``cryptography``'s PKCS#7 functions; 3DES (and single DES, only to
read legacy clients that a caller explicitly allows) is done here by hand, because
``cryptography`` does not handle those ciphers in CMS.
"""

import os

from asn1crypto import algos, cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from apps.scep.protocol.constants import OID_ENVELOPED_DATA, ContentCipher, FailInfo
from apps.scep.protocol.der import check_der
from apps.scep.protocol.errors import MalformedMessage, ProtocolError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
DECRYPTION_FAILED = "the message could not be decrypted"
_AES = {ContentCipher.AES_128_CBC: algorithms.AES128, ContentCipher.AES_256_CBC: algorithms.AES256}
# Cipher -> (key length, IV length) for the ciphers done by hand.
_BY_HAND = {ContentCipher.DES_EDE3_CBC: (24, 8), ContentCipher.DES_CBC: (8, 8)}


class DecryptionFailed(ProtocolError):
    """Every way decryption can fail, made indistinguishable on purpose."""

    def __init__(self) -> None:
        super().__init__(FailInfo.BAD_MESSAGE_CHECK, DECRYPTION_FAILED)


def encrypt(plaintext: bytes, recipient: x509.Certificate, cipher: ContentCipher) -> bytes:
    """A ContentInfo(EnvelopedData) of ``plaintext`` for ``recipient`` (RSA)."""
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ValueError("the recipient of an envelope must have an RSA key")
    if cipher in _AES:
        builder = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(plaintext)
            .add_recipient(recipient)
            .set_content_encryption_algorithm(_AES[cipher])
        )
        return builder.encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    if cipher is ContentCipher.DES_EDE3_CBC:
        return _encrypt_by_hand(plaintext, recipient, cipher.value, os.urandom(24))
    raise ValueError(f"mdmcerts does not encrypt with {cipher.name}")


def _encrypt_by_hand(plaintext: bytes, recipient: x509.Certificate, oid: str, key: bytes) -> bytes:
    """EnvelopedData with a (3)DES-CBC content key ``key`` under cipher OID ``oid``."""
    iv = os.urandom(8)
    padder = sym_padding.PKCS7(64).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(TripleDES(key), modes.CBC(iv)).encryptor()
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo({"ktri": _key_transport(recipient, key)})],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algos.EncryptionAlgorithm(
                    {"algorithm": oid, "parameters": core.OctetString(iv)}
                ),
                "encrypted_content": encryptor.update(padded) + encryptor.finalize(),
            },
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _key_transport(recipient: x509.Certificate, key: bytes) -> cms.KeyTransRecipientInfo:
    """RSA PKCS#1 v1.5 key transport of ``key`` to ``recipient``, named by issuer+serial."""
    asn1_recipient = asn1_x509.Certificate.load(recipient.public_bytes(Encoding.DER))
    issuer_and_serial = cms.IssuerAndSerialNumber(
        {"issuer": asn1_recipient.issuer, "serial_number": asn1_recipient.serial_number}
    )
    return cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier({"issuer_and_serial_number": issuer_and_serial}),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": recipient.public_key().encrypt(key, padding.PKCS1v15()),
        }
    )


def load_envelope(der: bytes) -> cms.EnvelopedData:
    """Parse a ContentInfo(EnvelopedData) (``MalformedMessage`` if it is not one)."""
    check_der(der)
    info = cms.ContentInfo.load(der)
    if info["content_type"].dotted != OID_ENVELOPED_DATA:
        raise MalformedMessage("the pkcsPKIEnvelope is not an EnvelopedData")
    return info["content"]


def content_cipher(enveloped: cms.EnvelopedData, *, allow_single_des: bool) -> ContentCipher:
    """The envelope's content cipher; anything not accepted is refused with badAlg."""
    oid = enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].dotted
    try:
        cipher = ContentCipher(oid)
    except ValueError:
        raise ProtocolError(FailInfo.BAD_ALG, "the content cipher is not accepted") from None
    if cipher is ContentCipher.DES_CBC and not allow_single_des:
        raise ProtocolError(FailInfo.BAD_ALG, "single DES is not accepted")
    return cipher


def decrypt(
    der: bytes,
    enveloped: cms.EnvelopedData,
    cipher: ContentCipher,
    *,
    certificate: x509.Certificate,
    key: PrivateKey,
) -> bytes:
    """The plaintext of envelope ``der`` for ``certificate``/``key``.

    Wrong recipient, non-RSA key, bad key, bad padding: all raise ``DecryptionFailed``.
    """
    try:
        if cipher in _AES:
            return pkcs7.pkcs7_decrypt_der(der, certificate, key, [])
        return _decrypt_by_hand(enveloped, cipher, certificate=certificate, key=key)
    except Exception:  # every cause must look the same to the sender
        raise DecryptionFailed() from None


def _decrypt_by_hand(
    enveloped: cms.EnvelopedData,
    cipher: ContentCipher,
    *,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
) -> bytes:
    key_length, iv_length = _BY_HAND[cipher]
    recipient_info = _recipient_info(enveloped, certificate)
    content_key = key.decrypt(recipient_info["encrypted_key"].native, padding.PKCS1v15())
    content_info = enveloped["encrypted_content_info"]
    iv = content_info["content_encryption_algorithm"]["parameters"].native
    if len(content_key) != key_length or len(iv) != iv_length:
        raise ValueError("bad key or IV length")
    # An 8-byte key repeated three times is single DES.
    decryptor = Cipher(TripleDES(content_key * (24 // key_length)), modes.CBC(iv)).decryptor()
    padded = decryptor.update(_encrypted_content(content_info)) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(64).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _recipient_info(
    enveloped: cms.EnvelopedData, certificate: x509.Certificate
) -> cms.KeyTransRecipientInfo:
    mine = asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
    for choice in enveloped["recipient_infos"]:
        if choice.name != "ktri":
            continue
        info = choice.chosen
        rid = info["rid"]
        if rid.name == "issuer_and_serial_number":
            matches = (
                rid.chosen["serial_number"].native == mine.serial_number
                and rid.chosen["issuer"] == mine.issuer
            )
        else:
            matches = rid.chosen.native == mine.key_identifier
        algorithm = info["key_encryption_algorithm"]["algorithm"].dotted
        if matches and algorithm == OID_RSA_ENCRYPTION:
            return info
    raise ValueError("no recipient info for this certificate")


def _encrypted_content(content_info: cms.EncryptedContentInfo) -> bytes:
    """encryptedContent [0] IMPLICIT OCTET STRING, primitive or constructed of chunks:
    Go's pkcs7 (micromdm) writes the constructed form with a definite length, which
    asn1crypto refuses, so the TLVs are split here."""
    *_, contents, _ = parser.parse(content_info.dump())
    elements = _split(contents)
    if len(elements) != 3 or elements[2][:2] != (2, 0):
        raise ValueError("no encrypted content")
    _, _, method, value = elements[2]
    if method == 0:
        return value
    chunks = _split(value)
    if any(chunk[:3] != (0, 4, 0) for chunk in chunks):
        raise ValueError("unexpected chunk in a constructed OCTET STRING")
    return b"".join(chunk[3] for chunk in chunks)


def _split(contents: bytes) -> list[tuple[int, int, int, bytes]]:
    """The (class, tag, method, contents) of consecutive TLVs."""
    elements = []
    while contents:
        length = parser.peek(contents)
        class_, method, tag, _, value, _ = parser.parse(contents[:length])
        elements.append((class_, tag, method, value))
        contents = contents[length:]
    return elements
