"""The reference device agent: a Linux host (or a test) as a managed mdmcerts device.

``python manage.py agent`` is its command line; this module is its logic. It speaks the
device API of ``docs/device-api.md`` and SCEP (RFC 8894) over HTTP only, with
``urllib.request`` and an explicit timeout on every call. It imports no model and never
touches the database: a device has none, and the end-to-end tests run it in a subprocess
whose ``DATABASE_URL`` points nowhere. Besides the standard library it needs only
``cryptography``, ``asn1crypto`` and the pure ``apps.scep.protocol`` package.

The state directory (0700) holds:

- ``state.json`` (0600): the server URL, the device id and token, the facts sent at each
  check-in, and each installed profile with its version, generation and the certificates
  it produced;
- ``profiles/<profile id>/`` (0700), one per installed profile: ``profile.json`` (the
  neutral profile as received, challenges and PKCS#12 files and passwords blanked),
  ``<payload uuid>.key.pem`` (0600) and ``<payload uuid>.cert.pem`` per SCEP or PKCS#12
  identity payload (and ``<payload uuid>.chain.pem``, the issuers a PKCS#12 carried),
  ``<payload uuid>-<n>.ca.pem`` per certificate of a trusted-certificate payload;
- ``profiles/<profile id>.mobileconfig`` (0600) for a profile delivered as an Apple
  configuration profile: saved for a person or another tool to install, not acknowledged.

Private keys are stored unencrypted (PKCS#8 PEM, mode 0600) and the device token in clear
in ``state.json``. That is acceptable for a reference agent that relies on file
permissions; a production agent keeps them in the platform's key store (TPM, keyring,
Secure Enclave). Wi-Fi, VPN and email payloads are checked and recorded in
``profile.json``, not applied to the host's network configuration.
"""

import base64
import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AttributeOID, NameOID

from apps.scep.protocol import client as scep
from apps.scep.protocol.constants import ContentCipher, DigestAlgorithm, MessageType, PKIStatus
from apps.scep.protocol.errors import ProtocolError

logger = logging.getLogger(__name__)

API_PATH = "/api/device/v1/"
HTTP_TIMEOUT = 30  # seconds, every HTTP call
MAX_REPLY_SIZE = 8 * 1024 * 1024  # far above any profile or SCEP reply
USER_AGENT = "mdmcerts-agent/1"
PLATFORMS = ("ios", "ipados", "macos", "android", "windows", "linux")
# The device API's fact keys (docs/device-api.md); written out, not imported from
# apps.devices.models, so the agent loads no Django code.
FACT_KEYS = (
    "name",
    "platform",
    "serial_number",
    "udid",
    "uuid",
    "imei",
    "imsi",
    "wifi_mac",
    "client_id",
)
DEFAULT_MAX_WAIT = 600.0  # seconds spent waiting for one pending SCEP request, at most
MAX_POLLS = 100  # whatever a profile's "retries" says
MAX_ROUNDS = 3  # check-ins per run: the first, then reports of what changed
PKI_MESSAGE = "application/x-pki-message"
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
IDENTITY_KINDS = ("scep", "pkcs12")  # payload kinds that produce an identity certificate
SETTINGS_KINDS = ("wifi", "vpn", "email")  # payload kinds that name an identity
# The short names of docs/device-api.md (and a few more), upper-cased for lookup.
NAME_OIDS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "T": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "STREET": NameOID.STREET_ADDRESS,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "INITIALS": NameOID.INITIALS,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
}
DOTTED_OID = re.compile(r"\d+(\.\d+)+")
EC_CURVES = {256: ec.SECP256R1, 384: ec.SECP384R1}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- errors ---------------------------------------------------------------------------


class AgentError(Exception):
    """The command cannot go on: bad usage, or the device API refused or is unreachable."""

    exit_code = 2


class ServerError(AgentError):
    """The device API answered with an error (``status``) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProfileError(Exception):
    """One profile could not be installed; the message goes into its "failed" ack."""


# --- HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpReply:
    """Status, media type and body of one HTTP answer (errors included)."""

    status: int
    content_type: str
    body: bytes


def http_request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> HttpReply:
    """One GET (or POST with ``data``) with the agent's timeout. 4xx/5xx answers are
    returned; an unreachable server raises ``OSError``."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise OSError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(  # noqa: S310 -- the scheme is checked above
        url, data=data, headers={"User-Agent": USER_AGENT, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            body = response.read(MAX_REPLY_SIZE)
            return HttpReply(response.status, response.headers.get_content_type(), body)
    except urllib.error.HTTPError as error:
        with error:
            return HttpReply(error.code, error.headers.get_content_type(), error.read(4096))


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to whatever query it already has."""
    parts = urllib.parse.urlsplit(url)
    query = "&".join(filter(None, [parts.query, urllib.parse.urlencode(params)]))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _reason(exc: OSError) -> str:
    return str(getattr(exc, "reason", None) or exc)


@dataclass
class DeviceApi:
    """The device API of one server, authenticated with the device token once there is one."""

    server: str
    token: str = ""

    def post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` as JSON to ``endpoint``; the JSON object answered, or
        ``ServerError`` with the server's ``detail``."""
        url = self.server.rstrip("/") + API_PATH + endpoint
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Device {self.token}"
        try:
            reply = http_request(url, data=json.dumps(payload).encode(), headers=headers)
        except OSError as exc:
            raise ServerError(f"{endpoint}: {url} is unreachable: {_reason(exc)}") from exc
        answer = _json_or_none(reply.body)
        if not 200 <= reply.status < 300:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            text = detail or reply.body[:200].decode(errors="replace").strip()
            raise ServerError(f"{endpoint}: HTTP {reply.status}: {text}", status=reply.status)
        if not isinstance(answer, dict):
            raise ServerError(f"{endpoint}: the answer is not a JSON object")
        return answer


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- state ----------------------------------------------------------------------------


@dataclass
class InstalledFile:
    """A certificate the agent installed: an identity (with its key) or a trusted CA.

    File names are relative to the profile's directory."""

    payload_uuid: str
    kind: str  # "identity" or "trusted"
    certificate: str
    key: str = ""
    fingerprint_sha256: str = ""
    subject: str = ""
    not_after: str = ""


@dataclass
class InstalledProfile:
    """A profile installed from the neutral format, and what it produced."""

    profile_id: int
    identifier: str
    uuid: str
    version: int | None
    generation: int | None
    installed_at: str
    certificates: list[InstalledFile] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InstalledProfile":
        files = [InstalledFile(**item) for item in data.get("certificates", [])]
        return cls(**{**data, "certificates": files})


@dataclass
class AgentState:
    """What ``state.json`` holds."""

    server: str
    device_id: int
    token: str
    facts: dict[str, str]
    profiles: dict[int, InstalledProfile] = field(default_factory=dict)
    inventory_due: bool = False  # the last run could not report its inventory

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = {str(pid): asdict(p) for pid, p in sorted(self.profiles.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AgentState":
        profiles = {
            int(pid): InstalledProfile.from_json(item)
            for pid, item in data.get("profiles", {}).items()
        }
        return cls(**{**data, "profiles": profiles})


def state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def profiles_root(state_dir: Path) -> Path:
    return state_dir / "profiles"


def profile_dir(state_dir: Path, profile_id: int) -> Path:
    return profiles_root(state_dir) / str(int(profile_id))


def load_state(state_dir: Path) -> AgentState | None:
    """The saved state, or None when this directory holds no enrollment."""
    try:
        data = json.loads(state_file(state_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AgentError(f"{state_file(state_dir)} cannot be read: {exc}") from exc
    try:
        return AgentState.from_json(data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise AgentError(f"{state_file(state_dir)} is not an agent state: {exc}") from exc


def save_state(state_dir: Path, state: AgentState) -> None:
    """Write ``state.json`` atomically (a crash leaves the old or the new one), mode 0600."""
    write_private(state_file(state_dir), json.dumps(state.to_json(), indent=2).encode())


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # O_CREAT's mode is filtered by the umask
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(state_dir: Path, *, create: bool = False) -> Iterator[None]:
    """Hold the state directory's lock: one agent run at a time per device."""
    if create:
        make_private_dir(state_dir)
    elif not state_file(state_dir).exists():
        raise AgentError(f"not enrolled: {state_dir} holds no state; run enroll first")
    with open(state_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentError(f"another agent run holds {state_dir}") from None
        yield


def require_state(state_dir: Path, server: str | None) -> AgentState:
    """The enrolled state; ``server`` (if given) replaces the saved server URL."""
    state = load_state(state_dir)
    if state is None:
        raise AgentError(f"not enrolled: {state_dir} holds no state; run enroll first")
    if server:
        state.server = server.rstrip("/")
    return state


# --- keys and requests ----------------------------------------------------------------


def generate_key(key_type: str, key_size: int) -> PrivateKey:
    """A new key of the payload's ``key_type`` (rsa, ec) and ``key_size`` (bits)."""
    if key_type == "rsa" and 2048 <= key_size <= 8192:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    if key_type == "ec" and key_size in EC_CURVES:
        return ec.generate_private_key(EC_CURVES[key_size]())
    raise ProfileError(f"this agent cannot generate a {key_type} key of {key_size} bits")


def subject_name(pairs: list[list[str]]) -> x509.Name:
    """The subject of ``[["O", "Zylker"], ["CN", "alice"]]`` (most significant first),
    one attribute per RDN; short names as in docs/device-api.md, or dotted OIDs."""
    attributes = []
    for label, value in pairs:
        oid = NAME_OIDS.get(str(label).upper())
        if oid is None and DOTTED_OID.fullmatch(str(label)):
            oid = x509.ObjectIdentifier(label)
        if oid is None:
            raise ProfileError(f"unknown subject attribute {label!r}")
        try:
            attributes.append(x509.NameAttribute(oid, str(value)))
        except ValueError as exc:
            raise ProfileError(f"subject {label}={value!r} is not valid: {exc}") from exc
    return x509.Name(attributes)


def general_name(san_type: str, value: str) -> x509.GeneralName:
    """One SAN of docs/device-api.md: rfc822, dns, uri, or upn (an otherName holding a
    UTF8String, as Windows and the server encode it)."""
    try:
        if san_type == "rfc822":
            return x509.RFC822Name(value)
        if san_type == "dns":
            return x509.DNSName(value.encode("idna").decode("ascii"))
        if san_type == "uri":
            return x509.UniformResourceIdentifier(value)
        if san_type == "upn":
            return x509.OtherName(UPN_OID, core.UTF8String(value).dump())
    except (ValueError, UnicodeError) as exc:
        raise ProfileError(f"{san_type} SAN {value!r} is not valid: {exc}") from exc
    raise ProfileError(f"unknown SAN type {san_type!r}")


def key_usage(usage: dict[str, bool]) -> x509.KeyUsage | None:
    """The key usage a payload asks for, or None when it asks for none."""
    signature = bool(usage.get("digital_signature"))
    encipherment = bool(usage.get("key_encipherment"))
    if not (signature or encipherment):
        return None
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def build_csr(payload: dict[str, Any], key: PrivateKey) -> x509.CertificateSigningRequest:
    """The CSR of a SCEP payload: exactly its subject and SANs, its key usage, and its
    challenge as challengePassword."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject_name(payload.get("subject") or [])
    )
    names = [general_name(kind, value) for kind, value in payload.get("subject_alt_names") or []]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    usage = key_usage(payload.get("key_usage") or {})
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if payload.get("challenge"):
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, payload["challenge"].encode()
        )
    return builder.sign(key, hashes.SHA256())


def poll_delays(retries: int, retry_delay: float, max_wait: float) -> list[float]:
    """The waits before each CertPoll: ``retries`` polls ``retry_delay`` seconds apart,
    closer together if needed so that all of them fit in ``max_wait`` seconds."""
    polls = max(0, min(int(retries), MAX_POLLS))
    if polls == 0:
        return []
    delay = max(0.0, min(float(retry_delay), float(max_wait) / polls))
    return [delay] * polls


# --- SCEP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScepServer:
    """What GetCACaps and GetCACert said about one SCEP URL."""

    url: str
    caps: frozenset[str]
    certificates: list[x509.Certificate]
    issuer: x509.Certificate
    # Read CertReps encrypted with single DES: only when the profile says this CA (an
    # external one such as micromdm's scepserver 2.1) answers with nothing else.
    single_des_replies: bool = False

    @property
    def recipient(self) -> x509.Certificate:
        return scep.select_recipient(self.certificates)

    @property
    def cipher(self) -> ContentCipher:
        if self.caps & {"AES", "SCEPSTANDARD"}:
            return ContentCipher.AES_256_CBC
        raise ProfileError("SCEP: the server does not offer AES; this agent sends nothing weaker")

    @property
    def digest(self) -> DigestAlgorithm:
        if self.caps & {"SHA-256", "SCEPSTANDARD"}:
            return DigestAlgorithm.SHA256
        if "SHA-512" in self.caps:
            return DigestAlgorithm.SHA512
        raise ProfileError("SCEP: the server offers neither SHA-256 nor SHA-512")


def scep_get(url: str, operation: str) -> bytes:
    """The body of a GET ``operation`` answered 200; ``ProfileError`` otherwise."""
    try:
        reply = http_request(with_query(url, operation=operation))
    except OSError as exc:
        raise ProfileError(f"SCEP {operation}: {url} is unreachable: {_reason(exc)}") from exc
    if reply.status != 200:
        raise ProfileError(f"SCEP {operation}: HTTP {reply.status} from {url}")
    return reply.body


def issuing_ca(certificates: list[x509.Certificate], fingerprint: str) -> x509.Certificate:
    """The CA certificate the profile names by its SHA-256 fingerprint (the first CA
    certificate when it names none)."""
    wanted = fingerprint.replace(":", "").lower()
    if wanted:
        for certificate in certificates:
            if certificate.fingerprint(hashes.SHA256()).hex() == wanted:
                return certificate
        raise ProfileError("SCEP: the server's CA does not match the profile's CA fingerprint")
    for certificate in certificates:
        with contextlib.suppress(x509.ExtensionNotFound):
            if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return certificate
    raise ProfileError("SCEP: GetCACert returned no CA certificate")


def discover(url: str, fingerprint: str, *, single_des_replies: bool = False) -> ScepServer:
    """GetCACaps and GetCACert of a SCEP URL, checked against the profile's fingerprint."""
    caps_text = scep_get(url, "GetCACaps").decode(errors="replace")
    caps = frozenset(line.strip().upper() for line in caps_text.splitlines() if line.strip())
    certificates = scep.parse_ca_certs(scep_get(url, "GetCACert"))
    issuer = issuing_ca(certificates, fingerprint)
    return ScepServer(url, caps, certificates, issuer, single_des_replies=single_des_replies)


def send_pki_message(server: ScepServer, der: bytes) -> bytes:
    """One PKIOperation: POST when the server says so, else GET; the CertRep's bytes."""
    try:
        if "POSTPKIOPERATION" in server.caps:
            reply = http_request(
                with_query(server.url, operation="PKIOperation"),
                data=der,
                headers={"Content-Type": PKI_MESSAGE},
            )
        else:
            message = base64.b64encode(der).decode()
            reply = http_request(with_query(server.url, operation="PKIOperation", message=message))
    except OSError as exc:
        raise ProfileError(f"SCEP: {server.url} is unreachable: {_reason(exc)}") from exc
    if reply.status != 200 or reply.content_type != PKI_MESSAGE:
        text = reply.body[:200].decode(errors="replace").strip()
        raise ProfileError(f"SCEP PKIOperation: HTTP {reply.status} {reply.content_type}: {text}")
    return reply.body


@dataclass(frozen=True)
class ScepRequest:
    """One enrollment transaction: the key, its CSR, the transient signer and the id."""

    key: PrivateKey
    csr: x509.CertificateSigningRequest
    signer: x509.Certificate
    transaction_id: str

    @classmethod
    def for_payload(cls, payload: dict[str, Any], key: PrivateKey) -> "ScepRequest":
        csr = build_csr(payload, key)
        signer = scep.self_signed_signer(key, csr.subject)
        return cls(key, csr, signer, scep.transaction_id_for(key.public_key()))


def exchange(
    server: ScepServer, request: ScepRequest, message_type: MessageType, payload: bytes
) -> scep.CertRepResult:
    """Send one pkiMessage of this transaction and read the CertRep that answers it."""
    der, nonce = scep.build_pki_message(
        message_type=message_type,
        payload=payload,
        transaction_id=request.transaction_id,
        signer_certificate=request.signer,
        signer_key=request.key,
        recipient_certificate=server.recipient,
        content_cipher=server.cipher,
        digest_algorithm=server.digest,
    )
    result = scep.parse_cert_rep(
        send_pki_message(server, der),
        recipient_key=request.key,
        recipient_certificate=request.signer,
        ra_certificates=server.certificates,
        allow_single_des=server.single_des_replies,
    )
    if (result.transaction_id, result.recipient_nonce) != (request.transaction_id, nonce):
        raise ProfileError("SCEP: the CertRep does not answer this request")
    return result


def request_certificate(
    payload: dict[str, Any],
    key: PrivateKey,
    *,
    max_wait: float,
    sleep: Callable[[float], None] = time.sleep,
) -> x509.Certificate:
    """Enroll ``key`` over SCEP as the payload says: PKCSReq, then CertPoll while the
    request is pending, a bounded number of times."""
    try:
        server = discover(
            payload["url"],
            payload.get("ca_fingerprint_sha256") or "",
            single_des_replies=payload.get("accept_single_des_replies") is True,
        )
        request = ScepRequest.for_payload(payload, key)
        result = exchange(server, request, MessageType.PKCS_REQ, scep.pkcs_req_payload(request.csr))
        delays = poll_delays(payload.get("retries", 0), payload.get("retry_delay", 0), max_wait)
        for number, delay in enumerate(delays, start=1):
            if result.status is not PKIStatus.PENDING:
                break
            logger.info("SCEP request pending; poll %d of %d in %.1f s", number, len(delays), delay)
            sleep(delay)
            poll = scep.cert_poll_payload(server.issuer.subject, request.csr.subject)
            result = exchange(server, request, MessageType.CERT_POLL, poll)
    except ProtocolError as exc:
        raise ProfileError(f"SCEP: {exc.reason}") from exc
    return issued_certificate(result, key, server.issuer)


def issued_certificate(
    result: scep.CertRepResult, key: PrivateKey, issuer: x509.Certificate
) -> x509.Certificate:
    """The certificate of a SUCCESS CertRep for ``key``, checked against the issuing CA."""
    if result.status is PKIStatus.PENDING:
        raise ProfileError("SCEP: the request is still pending (waiting for approval)")
    if result.status is not PKIStatus.SUCCESS:
        fail = result.fail_info.name if result.fail_info is not None else "no failInfo"
        raise ProfileError(f"SCEP: {fail}: {result.fail_info_text or 'no reason given'}")
    for certificate in result.certificates:
        if certificate.public_key() == key.public_key():
            try:
                certificate.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise ProfileError("SCEP: the certificate is not issued by the CA") from exc
            return certificate
    raise ProfileError("SCEP: the CertRep holds no certificate for this key")


# --- installing and removing profiles --------------------------------------------------


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def file_stem(payload_uuid: str) -> str:
    """A payload UUID as a file name (anything else is refused, not used as a path)."""
    try:
        return str(uuid.UUID(str(payload_uuid)))
    except ValueError:
        raise ProfileError(f"payload uuid {payload_uuid!r} is not a UUID") from None


def install_scep(payload: dict[str, Any], directory: Path, *, max_wait: float) -> InstalledFile:
    """Generate a key, enroll it over SCEP, store both; the identity's record."""
    body = payload["scep"]
    stem = file_stem(payload["uuid"])
    key = generate_key(body.get("key_type", "rsa"), int(body.get("key_size", 2048)))
    certificate = request_certificate(body, key, max_wait=max_wait)
    return store_identity(directory, stem, key, certificate)


def install_pkcs12(payload: dict[str, Any], directory: Path) -> InstalledFile:
    """Open the identity the server generated (a PKCS#12 with its password), check that
    its key and certificate belong together, store both; the identity's record."""
    body = payload["pkcs12"]
    stem = file_stem(payload["uuid"])
    try:
        data = base64.b64decode(body["data"], validate=True)
        key, certificate, issuers = pkcs12.load_key_and_certificates(
            data, str(body["password"]).encode()
        )
    except (ValueError, TypeError) as exc:
        raise ProfileError("PKCS#12: the file does not open with the password given") from exc
    if key is None or certificate is None:
        raise ProfileError("PKCS#12: the file holds no key and certificate")
    if certificate.public_key() != key.public_key():
        raise ProfileError("PKCS#12: the key does not belong to the certificate")
    expected = str(body.get("fingerprint_sha256") or "").replace(":", "").lower()
    if expected and fingerprint(certificate) != expected:
        raise ProfileError("PKCS#12: the certificate is not the one the profile names")
    if issuers:
        write_public(directory / f"{stem}.chain.pem", b"".join(pem(c) for c in issuers))
    return store_identity(directory, stem, key, certificate)


def store_identity(
    directory: Path, stem: str, key: PrivateKey, certificate: x509.Certificate
) -> InstalledFile:
    """Write an identity's key (0600) and certificate; its record."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # see the module docstring
    )
    write_private(directory / f"{stem}.key.pem", key_pem)
    write_public(directory / f"{stem}.cert.pem", pem(certificate))
    return InstalledFile(
        payload_uuid=stem,
        kind="identity",
        certificate=f"{stem}.cert.pem",
        key=f"{stem}.key.pem",
        fingerprint_sha256=fingerprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        not_after=certificate.not_valid_after_utc.isoformat(),
    )


def install_trusted(payload: dict[str, Any], directory: Path) -> list[InstalledFile]:
    """Store each certificate of a trusted-certificate payload."""
    stem = file_stem(payload["uuid"])
    installed = []
    for number, text in enumerate(payload["trusted_certificate"]["certificates_pem"]):
        try:
            certificate = x509.load_pem_x509_certificate(text.encode())
        except ValueError as exc:
            raise ProfileError(f"trusted certificate {number} is not a PEM certificate") from exc
        name = f"{stem}-{number}.ca.pem"
        write_public(directory / name, pem(certificate))
        installed.append(
            InstalledFile(
                payload_uuid=stem,
                kind="trusted",
                certificate=name,
                fingerprint_sha256=fingerprint(certificate),
                subject=certificate.subject.rfc4514_string(),
                not_after=certificate.not_valid_after_utc.isoformat(),
            )
        )
    return installed


def check_identity(payload: dict[str, Any], identities: set[str]) -> None:
    """A Wi-Fi, VPN or email payload must name an identity payload of its profile."""
    settings = payload.get(payload["kind"]) or {}
    if settings.get("identity_payload_uuid") not in identities:
        raise ProfileError(
            f"{payload['kind']} payload {payload.get('display_name', '')!r} names an identity "
            "certificate that the profile does not carry"
        )


def install_payloads(
    profile: dict[str, Any], directory: Path, *, max_wait: float
) -> list[InstalledFile]:
    """Install every payload of a neutral profile into ``directory``; the files made."""
    payloads = profile.get("payloads") or []
    identities = {p.get("uuid") for p in payloads if p.get("kind") in IDENTITY_KINDS}
    installed: list[InstalledFile] = []
    for payload in payloads:
        kind = payload.get("kind")
        if kind == "scep":
            installed.append(install_scep(payload, directory, max_wait=max_wait))
        elif kind == "pkcs12":
            installed.append(install_pkcs12(payload, directory))
        elif kind == "trusted_certificate":
            installed.extend(install_trusted(payload, directory))
        elif kind in SETTINGS_KINDS:
            check_identity(payload, identities)
        else:
            raise ProfileError(f"this agent cannot install {kind!r} payloads")
    return installed


def redacted(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile without its challenges, PKCS#12 files and their passwords, to keep on
    disk (the key is kept once, in its 0600 file)."""
    copy = json.loads(json.dumps(profile))
    for payload in copy.get("payloads") or []:
        if isinstance(payload.get("scep"), dict) and payload["scep"].get("challenge"):
            payload["scep"]["challenge"] = ""
        if isinstance(payload.get("pkcs12"), dict):
            payload["pkcs12"].update(data="", password="")
    return copy


def install_profile(item: dict[str, Any], state_dir: Path, *, max_wait: float) -> InstalledProfile:
    """Install a neutral profile. It is built in a staging directory that replaces the
    previous version only once everything worked, so a failure leaves the old one."""
    profile_id = int(item["profile_id"])
    staging = profiles_root(state_dir) / f".{profile_id}.new"
    shutil.rmtree(staging, ignore_errors=True)
    make_private_dir(profiles_root(state_dir))
    make_private_dir(staging)
    try:
        profile = item["profile"]
        installed = install_payloads(profile, staging, max_wait=max_wait)
        write_private(staging / "profile.json", json.dumps(redacted(profile), indent=2).encode())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ProfileError(f"the profile is malformed: {exc!r}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(profile_dir(state_dir, profile_id), ignore_errors=True)
    staging.rename(profile_dir(state_dir, profile_id))
    return InstalledProfile(
        profile_id=profile_id,
        identifier=str(item.get("identifier", "")),
        uuid=str(item.get("uuid", "")),
        version=item.get("version"),
        generation=item.get("generation"),
        installed_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        certificates=installed,
    )


def save_mobileconfig(item: dict[str, Any], state_dir: Path) -> Path:
    """Store an Apple configuration profile for someone to install; its path."""
    try:
        data = base64.b64decode(item["mobileconfig"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError("the mobileconfig is not valid base64") from exc
    path = profiles_root(state_dir) / f"{int(item['profile_id'])}.mobileconfig"
    make_private_dir(path.parent)
    write_private(path, data)  # it may hold a challenge
    return path


def remove_profile(state_dir: Path, state: AgentState, profile_id: int) -> None:
    """Delete whatever the profile installed (keys included) and forget it."""
    shutil.rmtree(profile_dir(state_dir, profile_id), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (profiles_root(state_dir) / f"{int(profile_id)}.mobileconfig").unlink()
    state.profiles.pop(int(profile_id), None)


def installed_certificates(state_dir: Path, state: AgentState) -> list[dict[str, str]]:
    """The inventory: every certificate file still on disk, once each, as PEM."""
    seen: dict[str, dict[str, str]] = {}
    for profile in state.profiles.values():
        for record in profile.certificates:
            path = profile_dir(state_dir, profile.profile_id) / record.certificate
            try:
                certificate = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                continue  # gone or damaged: not installed any more
            seen.setdefault(fingerprint(certificate), {"pem": pem(certificate).decode()})
    return list(seen.values())


# --- results ----------------------------------------------------------------------------


@dataclass
class ProfileOutcome:
    """What happened to one profile of a check-in."""

    action: str  # installed, failed, removed, saved
    profile_id: int
    identifier: str
    version: int | None = None
    generation: int | None = None
    error: str = ""
    path: str = ""
    certificates: list[dict[str, str]] = field(default_factory=list)

    def line(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        text = f"  {self.action:<9} {self.identifier or self.profile_id}{version}"
        if self.error:
            return f"{text}: {self.error}"
        if self.path:
            return f"{text}: saved to {self.path} (install it by hand)"
        for cert in self.certificates:
            if cert["kind"] == "identity":
                text += f"\n            certificate {cert['subject']} until {cert['not_after']}"
        return text


@dataclass
class EnrollResult:
    """An enrollment: the device id the server gave."""

    server: str
    device_id: int
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"command": "enroll", **asdict(self)}

    def summary(self) -> str:
        return f"enrolled at {self.server} as device {self.device_id}"


@dataclass
class CheckinResult:
    """A check-in run: every profile outcome, and whether an inventory was sent."""

    device_id: int
    rounds: int = 0
    scan_requested: bool = False
    inventory_sent: int | None = None  # certificates reported; None: no inventory
    profiles: list[ProfileOutcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(p.action == "failed" for p in self.profiles) else 0

    def as_dict(self) -> dict[str, Any]:
        return {"command": "checkin", **asdict(self), "exit_code": self.exit_code}

    def summary(self) -> str:
        inventory = (
            "no inventory sent"
            if self.inventory_sent is None
            else f"inventory of {self.inventory_sent} certificate(s) sent"
        )
        head = f"checked in as device {self.device_id} ({inventory})"
        lines = [p.line() for p in self.profiles] or ["  nothing to install or remove"]
        return "\n".join([head, *lines])


@dataclass
class UnenrollResult:
    """An unenrollment: the device and the profiles removed from this host."""

    device_id: int
    removed_profiles: list[int]
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"command": "unenroll", **asdict(self)}

    def summary(self) -> str:
        return (
            f"unenrolled device {self.device_id}; removed "
            f"{len(self.removed_profiles)} profile(s) and the agent's state"
        )


# --- commands -----------------------------------------------------------------------------


def default_facts() -> dict[str, str]:
    """What the agent knows about this host without being told."""
    return {"name": socket.gethostname(), "platform": "linux"}


def enroll(state_dir: Path, *, server: str, code: str, facts: dict[str, str]) -> EnrollResult:
    """Enroll with ``code``; save the device id and token in ``state_dir``."""
    if facts.get("platform") not in PLATFORMS:
        raise AgentError(f"platform must be one of {', '.join(PLATFORMS)}")
    sent = {key: value for key, value in facts.items() if key in FACT_KEYS and value}
    with locked(state_dir, create=True):
        existing = load_state(state_dir)
        if existing is not None:
            raise AgentError(
                f"{state_dir} is already enrolled as device {existing.device_id}; "
                "unenroll first or use another --state-dir"
            )
        answer = DeviceApi(server).post("enroll", {"code": code, **sent})
        try:
            device_id, token = int(answer["device_id"]), str(answer["token"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"enroll: the answer lacks device_id or token: {exc!r}") from exc
        save_state(state_dir, AgentState(server.rstrip("/"), device_id, token, sent))
    return EnrollResult(server=server.rstrip("/"), device_id=device_id)


def checkin(
    state_dir: Path,
    *,
    server: str | None = None,
    scan: bool = False,
    max_wait: float = DEFAULT_MAX_WAIT,
) -> CheckinResult:
    """Check in; install and remove what the server says, ack each; report the inventory
    when asked (``scan``, the server, or a previous run) and after any change."""
    with locked(state_dir):
        state = require_state(state_dir, server)
        api = DeviceApi(state.server, state.token)
        result = CheckinResult(device_id=state.device_id)
        send_inventory = scan or state.inventory_due
        for _ in range(MAX_ROUNDS):
            inventory = installed_certificates(state_dir, state) if send_inventory else None
            answer = api.post("checkin", checkin_body(state, inventory))
            result.rounds += 1
            if inventory is not None:
                result.inventory_sent, state.inventory_due = len(inventory), False
            asked = bool(answer.get("scan_requested"))
            result.scan_requested |= asked
            changed = apply_answer(api, state_dir, state, answer, result, max_wait=max_wait)
            send_inventory = changed or (asked and inventory is None)
            if not send_inventory:
                break
        state.inventory_due = send_inventory
        save_state(state_dir, state)
    return result


def checkin_body(state: AgentState, inventory: list[dict[str, str]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"facts": state.facts}
    if inventory is not None:
        body["installed_certificates"] = inventory
    return body


def apply_answer(
    api: DeviceApi,
    state_dir: Path,
    state: AgentState,
    answer: dict[str, Any],
    result: CheckinResult,
    *,
    max_wait: float,
) -> bool:
    """Install and remove what a check-in answer lists, acking each; whether anything on
    the host changed."""
    changed = False
    try:
        for item in answer.get("install") or []:
            outcome = install_item(item, state_dir, state, max_wait=max_wait)
            save_state(state_dir, state)
            result.profiles.append(outcome)
            if outcome.action in ("installed", "failed"):
                ack(api, outcome)
            changed |= outcome.action == "installed"
        for item in answer.get("remove") or []:
            outcome = remove_item(item, state_dir, state)
            save_state(state_dir, state)
            result.profiles.append(outcome)
            ack(api, outcome)
            changed = True
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServerError(f"checkin: the answer is malformed: {exc!r}") from exc
    return changed


def install_item(
    item: dict[str, Any], state_dir: Path, state: AgentState, *, max_wait: float
) -> ProfileOutcome:
    """Install one ``install`` item (or save it, for a mobileconfig); never raises
    ``ProfileError``: a failure is an outcome."""
    outcome = ProfileOutcome(
        action="installed",
        profile_id=int(item["profile_id"]),
        identifier=str(item.get("identifier", "")),
        version=item.get("version"),
        generation=item.get("generation"),
    )
    try:
        if item.get("format") == "mobileconfig":
            return replace(outcome, action="saved", path=str(save_mobileconfig(item, state_dir)))
        if item.get("format") != "json":
            raise ProfileError(f"this agent cannot install the format {item.get('format')!r}")
        installed = install_profile(item, state_dir, max_wait=max_wait)
    except ProfileError as exc:
        logger.warning("profile %s failed: %s", outcome.identifier, exc)
        return replace(outcome, action="failed", error=str(exc))
    state.profiles[installed.profile_id] = installed
    outcome.certificates = [asdict(record) for record in installed.certificates]
    return outcome


def remove_item(item: dict[str, Any], state_dir: Path, state: AgentState) -> ProfileOutcome:
    profile_id = int(item["profile_id"])
    remove_profile(state_dir, state, profile_id)
    return ProfileOutcome(
        action="removed", profile_id=profile_id, identifier=str(item.get("identifier", ""))
    )


def ack(api: DeviceApi, outcome: ProfileOutcome) -> None:
    """Tell the server what became of a profile."""
    body: dict[str, Any] = {"profile_id": outcome.profile_id, "status": outcome.action}
    if outcome.action != "removed":
        body.update(version=outcome.version, generation=outcome.generation)
    if outcome.error:
        body["error"] = outcome.error
    api.post("ack", body)


def unenroll(state_dir: Path, *, server: str | None = None) -> UnenrollResult:
    """Tell the server the device leaves; then delete every profile and the state."""
    with locked(state_dir):
        state = require_state(state_dir, server)
        DeviceApi(state.server, state.token).post("unenroll", {})
        removed = sorted(state.profiles)
        shutil.rmtree(profiles_root(state_dir), ignore_errors=True)
        state_file(state_dir).unlink()
    return UnenrollResult(device_id=state.device_id, removed_profiles=removed)
