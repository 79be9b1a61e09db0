"""A small SCEP (RFC 8894) client for the tests, over HTTP.

It speaks to the endpoint through a transport: ``DjangoTransport`` (Django's test
``Client``, in process) or ``UrlTransport`` (a live URL through ``urllib.request``, with a
timeout on every call). Messages are built and CertReps read by the protocol package's
``client`` module; this module adds the HTTP side (GetCACaps, GetCACert, PKIOperation by
POST and by GET, the ``message`` parameter URL-encoded or with the raw ``+`` and ``/``
that macOS sends), checks that every CertRep is signed by the RA and echoes the request's
transactionID and senderNonce, and builds what legacy clients send (single DES, MD5).
"""

import base64
import datetime
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.x509.oid import NameOID

from apps.scep.protocol import ContentCipher, DigestAlgorithm, MessageType, constants
from apps.scep.protocol import client as protocol_client
from apps.scep.protocol import cms as scep_cms
from apps.scep.protocol.client import CertRepResult
from apps.scep.protocol.der import der_set_of

PKI_MESSAGE = "application/x-pki-message"
TIMEOUT = 10
URLENCODED = "urlencoded"  # message=<base64 with %2B, %2F, %3D>
RAW = "raw"  # message=<base64 with + and / as they are>: what macOS sends
CHALLENGE_PASSWORD = x509.ObjectIdentifier(constants.OID_CHALLENGE_PASSWORD)


@dataclass(frozen=True)
class HttpReply:
    """What the endpoint answered: status, exact Content-Type header and body."""

    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class DjangoTransport:
    """Requests through Django's test ``Client``, from ``remote_addr``."""

    def __init__(self, django_client, *, remote_addr: str = "127.0.0.1") -> None:
        self.client = django_client
        self.remote_addr = remote_addr

    def get(self, path: str, query: str) -> HttpReply:
        # The query goes in the path so that it reaches the server exactly as written.
        response = self.client.generic("GET", f"{path}?{query}", REMOTE_ADDR=self.remote_addr)
        return _django_reply(response)

    def post(self, path: str, query: str, body: bytes) -> HttpReply:
        response = self.client.generic(
            "POST", f"{path}?{query}", body, content_type=PKI_MESSAGE, REMOTE_ADDR=self.remote_addr
        )
        return _django_reply(response)


def _django_reply(response) -> HttpReply:
    return HttpReply(response.status_code, response.get("Content-Type", ""), response.content)


class UrlTransport:
    """Requests to a live server (``base_url`` such as ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, *, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, query: str) -> HttpReply:
        return self._open(urllib.request.Request(f"{self.base_url}{path}?{query}"))  # noqa: S310

    def post(self, path: str, query: str, body: bytes) -> HttpReply:
        request = urllib.request.Request(  # noqa: S310 -- a local test server
            f"{self.base_url}{path}?{query}", data=body, headers={"Content-Type": PKI_MESSAGE}
        )
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> HttpReply:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return HttpReply(response.status, response.headers["Content-Type"], response.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpReply(error.code, error.headers["Content-Type"] or "", error.read())


class ScepHttpError(AssertionError):
    """The endpoint did not answer a SCEP operation with 200 and the right Content-Type."""


class EchoMismatch(AssertionError):
    """A CertRep did not echo the request's transactionID or senderNonce."""


@dataclass(frozen=True)
class Identity:
    """A client key and the certificate it signs pkiMessages with: a transient
    self-signed one for PKCSReq, or the current certificate for RenewalReq."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def self_signed(cls, key: rsa.RSAPrivateKey, subject: x509.Name | None = None) -> "Identity":
        subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scep client")])
        return cls(key, protocol_client.self_signed_signer(key, subject))


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_csr(
    key,
    *,
    subject: x509.Name | None = None,
    challenge: str | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateSigningRequest:
    """A CSR as devices send it: a subject, optionally a challengePassword and extensions."""
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(CHALLENGE_PASSWORD, challenge.encode())
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


class ScepClient:
    """One SCEP endpoint (``path``, e.g. ``/scep/<slug>/pkiclient.exe``) over ``transport``.

    ``method`` is "POST" or "GET"; ``get_style`` is ``URLENCODED`` or ``RAW``. The PKI
    operation helpers return the verified ``CertRepResult``; ``last_reply`` keeps the HTTP
    answer and ``last_message`` the pkiMessage sent.
    """

    def __init__(
        self, transport, path: str, *, method: str = "POST", get_style: str = URLENCODED
    ) -> None:
        self.transport = transport
        self.path = path
        self.method = method
        self.get_style = get_style
        self._ca_certs: list[x509.Certificate] | None = None
        self.last_reply: HttpReply | None = None
        self.last_message: bytes | None = None

    # --- the GET operations ---------------------------------------------------------

    def get_ca_caps(self) -> str:
        reply = self.transport.get(self.path, "operation=GetCACaps")
        _expect(reply, "text/plain")
        return reply.text

    def get_ca_cert(self) -> list[x509.Certificate]:
        reply = self.transport.get(self.path, "operation=GetCACert")
        _expect(reply, "application/x-x509-ca-ra-cert")
        return protocol_client.parse_ca_certs(reply.body)

    @property
    def ca_certs(self) -> list[x509.Certificate]:
        """The GetCACert answer, fetched once."""
        if self._ca_certs is None:
            self._ca_certs = self.get_ca_cert()
        return self._ca_certs

    @property
    def recipient(self) -> x509.Certificate:
        """The RA certificate: what requests are encrypted to and CertReps signed by."""
        return protocol_client.select_recipient(self.ca_certs)

    @property
    def issuer(self) -> x509.Name:
        """The CA's name, for CertPoll, GetCert and GetCRL."""
        return self.recipient.issuer

    # --- PKIOperation ----------------------------------------------------------------

    def send(
        self, der: bytes, *, method: str | None = None, get_style: str | None = None
    ) -> HttpReply:
        """Send a pkiMessage as it is; the HTTP answer, whatever its status."""
        method = method or self.method
        self.last_message = der
        if method == "POST":
            reply = self.transport.post(self.path, "operation=PKIOperation", der)
        else:
            reply = self.transport.get(self.path, get_query(der, get_style or self.get_style))
        self.last_reply = reply
        return reply

    def message(
        self,
        *,
        message_type: MessageType,
        payload: bytes,
        signer: Identity,
        transaction_id: str,
        cipher: ContentCipher = ContentCipher.AES_256_CBC,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    ) -> tuple[bytes, bytes]:
        """A pkiMessage for this endpoint's RA, and its senderNonce."""
        return protocol_client.build_pki_message(
            message_type=message_type,
            payload=payload,
            transaction_id=transaction_id,
            signer_certificate=signer.certificate,
            signer_key=signer.key,
            recipient_certificate=self.recipient,
            content_cipher=cipher,
            digest_algorithm=digest,
        )

    def read(
        self,
        reply: HttpReply,
        *,
        signer: Identity,
        transaction_id: str | None,
        nonce: bytes | None,
    ) -> CertRepResult:
        """Verify a CertRep (signed by the RA, echoing transactionID and nonce) and read it."""
        _expect(reply, PKI_MESSAGE)
        result = protocol_client.parse_cert_rep(
            reply.body,
            recipient_key=signer.key,
            recipient_certificate=signer.certificate,
            ra_certificates=[self.recipient],
        )
        if (result.transaction_id, result.recipient_nonce) != (transaction_id, nonce):
            raise EchoMismatch(
                f"the CertRep echoes {result.transaction_id!r}/{result.recipient_nonce!r}, "
                f"not {transaction_id!r}/{nonce!r}"
            )
        return result

    def exchange(
        self,
        *,
        message_type: MessageType,
        payload: bytes,
        signer: Identity,
        transaction_id: str,
        method: str | None = None,
        get_style: str | None = None,
        cipher: ContentCipher = ContentCipher.AES_256_CBC,
        digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    ) -> CertRepResult:
        """Build, send and read one PKIOperation."""
        der, nonce = self.message(
            message_type=message_type,
            payload=payload,
            signer=signer,
            transaction_id=transaction_id,
            cipher=cipher,
            digest=digest,
        )
        reply = self.send(der, method=method, get_style=get_style)
        return self.read(reply, signer=signer, transaction_id=transaction_id, nonce=nonce)

    def pkcs_req(
        self,
        csr: x509.CertificateSigningRequest,
        key: rsa.RSAPrivateKey,
        *,
        signer: Identity | None = None,
        transaction_id: str | None = None,
        **options,
    ) -> CertRepResult:
        """PKCSReq, signed by a transient self-signed certificate of ``key`` by default."""
        return self.exchange(
            message_type=MessageType.PKCS_REQ,
            payload=protocol_client.pkcs_req_payload(csr),
            signer=signer or Identity.self_signed(key, csr.subject),
            transaction_id=transaction_id or protocol_client.transaction_id_for(key.public_key()),
            **options,
        )

    def renewal_req(
        self,
        csr: x509.CertificateSigningRequest,
        current: Identity,
        *,
        transaction_id: str | None = None,
        **options,
    ) -> CertRepResult:
        """RenewalReq for ``csr``'s key, signed by the current certificate and its key."""
        return self.exchange(
            message_type=MessageType.RENEWAL_REQ,
            payload=protocol_client.pkcs_req_payload(csr),
            signer=current,
            transaction_id=transaction_id or protocol_client.transaction_id_for(csr.public_key()),
            **options,
        )

    def cert_poll(
        self,
        key: rsa.RSAPrivateKey,
        *,
        subject: x509.Name,
        transaction_id: str | None = None,
        signer: Identity | None = None,
        **options,
    ) -> CertRepResult:
        """CertPoll (GetCertInitial) for the request of ``key`` with this subject."""
        return self.exchange(
            message_type=MessageType.CERT_POLL,
            payload=protocol_client.cert_poll_payload(self.issuer, subject),
            signer=signer or Identity.self_signed(key, subject),
            transaction_id=transaction_id or protocol_client.transaction_id_for(key.public_key()),
            **options,
        )

    def get_cert(
        self, serial: int, signer: Identity, *, issuer: x509.Name | None = None, **options
    ) -> CertRepResult:
        """GetCert of the certificate ``serial`` of ``issuer`` (the CA by default)."""
        return self._issuer_and_serial(MessageType.GET_CERT, serial, signer, issuer, **options)

    def get_crl(
        self, serial: int, signer: Identity, *, issuer: x509.Name | None = None, **options
    ) -> CertRepResult:
        """GetCRL for the certificate ``serial`` of ``issuer`` (the CA by default)."""
        return self._issuer_and_serial(MessageType.GET_CRL, serial, signer, issuer, **options)

    def _issuer_and_serial(self, message_type, serial, signer, issuer, **options) -> CertRepResult:
        return self.exchange(
            message_type=message_type,
            payload=protocol_client.issuer_and_serial_payload(issuer or self.issuer, serial),
            signer=signer,
            transaction_id=options.pop("transaction_id", None) or os.urandom(8).hex(),
            **options,
        )


def get_query(der: bytes, style: str) -> str:
    """The query string of a PKIOperation by GET."""
    message = base64.b64encode(der).decode()
    if style == URLENCODED:
        message = urllib.parse.quote(message, safe="")
    return f"operation=PKIOperation&message={message}"


def _expect(reply: HttpReply, content_type: str) -> None:
    if reply.status != 200 or reply.content_type != content_type:
        raise ScepHttpError(
            f"expected 200 {content_type}, got {reply.status} {reply.content_type}: "
            f"{reply.body[:200]!r}"
        )


# --- what legacy or broken clients send ----------------------------------------------


def scep_attributes(
    *, message_type: int | str, transaction_id: str | core.Asn1Value, nonce: bytes
) -> list[bytes]:
    """messageType, transactionID (a PrintableString unless given as another ASN.1 value)
    and senderNonce, encoded as signed attributes."""
    if isinstance(transaction_id, str):
        transaction_id = core.PrintableString(transaction_id)
    encode = scep_cms.encode_attribute
    return [
        encode(constants.OID_MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        encode(constants.OID_TRANSACTION_ID, transaction_id),
        encode(constants.OID_SENDER_NONCE, core.OctetString(nonce)),
    ]


def signed_message(
    content: bytes,
    *,
    attributes: list[bytes],
    signer: Identity,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
) -> bytes:
    """A pkiMessage around ``content`` (an envelope) with exactly these SCEP attributes."""
    return scep_cms.sign_message(
        content=content,
        attributes=attributes,
        certificate=signer.certificate,
        key=signer.key,
        digest=digest,
    )


def single_des_envelope(plaintext: bytes, recipient: x509.Certificate) -> bytes:
    """A DES-CBC pkcsPKIEnvelope, as micromdm's scepclient 2.1 sends (3DES with one key
    three times is single DES)."""
    key, iv = os.urandom(8), os.urandom(8)
    padder = sym_padding.PKCS7(64).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(TripleDES(key * 3), modes.CBC(iv)).encryptor()
    asn1_recipient = asn1_x509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    recipient_info = {
        "version": "v0",
        "rid": {
            "issuer_and_serial_number": {
                "issuer": asn1_recipient.issuer,
                "serial_number": asn1_recipient.serial_number,
            }
        },
        "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
        "encrypted_key": recipient.public_key().encrypt(key, padding.PKCS1v15()),
    }
    enveloped = asn1_cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [asn1_cms.RecipientInfo({"ktri": recipient_info})],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": ContentCipher.DES_CBC.value,
                    "parameters": core.OctetString(iv),
                },
                "encrypted_content": encryptor.update(padded) + encryptor.finalize(),
            },
        }
    )
    return asn1_cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def md5_signed_message(content: bytes, *, attributes: list[bytes], signer: Identity) -> bytes:
    """A pkiMessage really digested and signed with MD5 (``cms.sign_message`` will not)."""
    md5 = hashlib.md5(content).digest()  # noqa: S324 -- the point: a client that uses MD5
    encode = scep_cms.encode_attribute
    signed_attrs = der_set_of(
        [
            *attributes,
            encode(constants.OID_CONTENT_TYPE, core.ObjectIdentifier(constants.OID_DATA)),
            encode(constants.OID_MESSAGE_DIGEST, core.OctetString(md5)),
            encode(constants.OID_SIGNING_TIME, _utc_time()),
        ]
    )
    certificate = asn1_x509.Certificate.load(
        signer.certificate.public_bytes(serialization.Encoding.DER)
    )
    sid = {"issuer": certificate.issuer, "serial_number": certificate.serial_number}
    signature = signer.key.sign(signed_attrs, padding.PKCS1v15(), hashes.MD5())  # noqa: S303
    signed_data = {
        "version": "v1",
        "digest_algorithms": [{"algorithm": "md5"}],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [certificate],
        "signer_infos": [
            {
                "version": "v1",
                "sid": asn1_cms.SignerIdentifier({"issuer_and_serial_number": sid}),
                "digest_algorithm": {"algorithm": "md5"},
                "signed_attrs": asn1_cms.CMSAttributes.load(signed_attrs),
                "signature_algorithm": {"algorithm": "md5_rsa"},
                "signature": signature,
            }
        ],
    }
    return asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def _utc_time() -> asn1_cms.Time:
    return asn1_cms.Time({"utc_time": datetime.datetime.now(datetime.UTC).replace(microsecond=0)})
