"""SCEP enrollment rules on top of the pure protocol package.

Every PKIOperation ends in a CertRep: SUCCESS, PENDING or FAILURE with a failInfo. A
refused request changes nothing but attempt counters and an audit event; the challenge,
the request row, the certificate and its audit event are written in one transaction, and
a request's transactionID makes a retried or duplicated message yield the same answer.
"""

import datetime
import hashlib
import logging
import math
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import build_event, record_event
from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.certificates.models import Certificate, CertificateRequest
from apps.certificates.services import (
    REFUSALS,
    IssuanceRefused,
    certificate_row,
    check_csr,
    current_crl,
    record_refusal,
    sign_and_record,
)
from apps.core.net import client_ip
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import AttemptCounter, CertificateTemplate
from apps.enrollment.rendering import RequestedNames, build_issuance_spec
from apps.enrollment.services import (
    clear_failed_attempts,
    lockout_remaining,
    record_failed_attempt,
    redeem_challenge,
)
from apps.enrollment.variables import values_for
from apps.pki import crypto
from apps.pki.backends import backend_for
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ra
from apps.scep import commit, protocol
from apps.scep.protocol import FailInfo, MessageType, PKIRequest, PKIStatus

logger = logging.getLogger(__name__)


class Refusal(Exception):
    """An enrollment rule said no; ``reason`` is safe to show (no challenge, no internals)."""

    def __init__(self, fail_info: FailInfo, reason: str, *, counts: bool = True) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.reason = reason
        self.counts = counts  # whether it counts as a failed attempt toward the lockout


@dataclass
class Outcome:
    """What the CertRep says."""

    status: PKIStatus
    certificates: list[x509.Certificate] = field(default_factory=list)
    crl_der: bytes | None = None
    fail_info: FailInfo | None = None
    text: str | None = None


@dataclass
class Endpoint:
    """A template's SCEP endpoint with its CA and RA loaded."""

    template: CertificateTemplate
    ca: CertificateAuthority

    @property
    def ra(self) -> tuple[x509.Certificate, crypto.PrivateKey]:
        return self.ca.ra_certificate, self.ca.load_ra_key()

    @property
    def version(self) -> tuple:
        return (self.template.pk, self.template.updated_at, self.ca.pk, self.ca.updated_at)


def endpoint_for(slug: str) -> Endpoint | None:
    """The template's endpoint as the database has it now."""
    # The slug is unique, so no ORDER BY (``first()`` would add one); the successor CA is
    # loaded only by the operations that use it.
    template = next(
        iter(
            CertificateTemplate.objects.select_related("ca")
            .prefetch_related("san_rows")
            .filter(slug=slug)
            .order_by()[:1]
        ),
        None,
    )
    if template is None:
        return None
    template.ca = ensure_ra(template.ca)  # the row as it is after an RA was made, if one was
    return Endpoint(template=template, ca=template.ca)


# Endpoints as this process last loaded them, for the one-statement enrollment only: that
# statement writes nothing unless the template and CA rows are unchanged since (see
# ``commit``), and every other path loads the endpoint afresh.
_loaded: dict[str, Endpoint] = {}
MAX_LOADED = 256


def loaded_endpoint(slug: str) -> Endpoint | None:
    endpoint = _loaded.get(slug)
    if endpoint is None:
        endpoint = endpoint_for(slug)
        if endpoint is not None:
            if len(_loaded) >= MAX_LOADED:
                _loaded.clear()
            _loaded[slug] = endpoint
    return endpoint


def forget_endpoint(slug: str) -> None:
    _loaded.pop(slug, None)


def ca_caps(endpoint: Endpoint) -> str:
    return protocol.get_ca_caps(
        renewal=endpoint.template.auto_renew, next_ca_cert=_successor(endpoint) is not None
    )


def ca_certs(endpoint: Endpoint) -> bytes:
    return protocol.ca_certs_response(endpoint.ca.ra_certificate, endpoint.ca.chain())


def next_ca_certs(endpoint: Endpoint) -> bytes | None:
    successor = _successor(endpoint)
    if successor is None:
        return None
    successor = ensure_ra(successor)
    certificate, key = endpoint.ra
    return protocol.next_ca_certs_response(
        certificates=[successor.ra_certificate, *successor.chain()],
        ra_certificate=certificate,
        ra_key=key,
    )


def _successor(endpoint: Endpoint) -> CertificateAuthority | None:
    successor = endpoint.ca.successor
    return successor if successor is not None and successor.signs_locally else None


def answer_pki_operation(slug: str, message: bytes, *, request: HttpRequest) -> bytes | None:
    """Answer one pkiMessage sent to ``slug``'s endpoint with a CertRep; None when there is
    no such endpoint, ``MalformedMessage`` when the message cannot be answered.

    A PKCSReq that passes every check on a template without approval or dynamic challenge
    is committed in one statement (``commit``) with the endpoint this process loaded
    before; everything else, and any such request the statement does not write, takes the
    general path with the endpoint loaded afresh.
    """
    parsed = None
    if commit.available():
        endpoint = loaded_endpoint(slug)
        if endpoint is None:
            return None
        parsed = _parse(endpoint, message)
        if isinstance(parsed, PKIRequest):
            outcome = _enroll_in_one_statement(endpoint, parsed, request)
            if outcome is not None:
                return _reply(endpoint, parsed, outcome)
        loaded = endpoint
    endpoint = endpoint_for(slug)
    if endpoint is None:
        forget_endpoint(slug)
        return None
    if parsed is not None:
        if endpoint.version != loaded.version:
            parsed = None  # the template or CA changed: parse again as they are now
        _loaded[slug] = endpoint
    return pki_operation(endpoint, message, request=request, parsed=parsed)


def _parse(endpoint: Endpoint, message: bytes) -> PKIRequest | protocol.ProtocolError:
    ra_certificate, ra_key = endpoint.ra
    try:
        return protocol.parse_pki_message(
            message,
            ra_certificate=ra_certificate,
            ra_key=ra_key,
            allow_single_des=endpoint.template.allow_single_des,
        )
    except protocol.MalformedMessage:
        raise
    except protocol.ProtocolError as exc:
        return exc


def pki_operation(
    endpoint: Endpoint,
    message: bytes,
    *,
    request: HttpRequest,
    parsed: PKIRequest | protocol.ProtocolError | None = None,
) -> bytes:
    """Answer one pkiMessage with a CertRep. ``MalformedMessage`` when it cannot be answered.

    ``parsed`` is the message as parsed already with this endpoint's RA, if it was."""
    pki_request = parsed if parsed is not None else _parse(endpoint, message)
    if isinstance(pki_request, protocol.ProtocolError):
        exc = pki_request
        record_refusal(template=endpoint.template, reason=f"SCEP: {exc.reason}", request=request)
        return _reply(
            endpoint, exc, Outcome(PKIStatus.FAILURE, fail_info=exc.fail_info, text=exc.reason)
        )
    outcome = _answer(endpoint, pki_request, request)
    return _reply(endpoint, pki_request, outcome)


def _enroll_in_one_statement(
    endpoint: Endpoint, pki_request: PKIRequest, request: HttpRequest
) -> Outcome | None:
    """The common successful PKCSReq, committed by ``commit.record_enrollment``; None
    whenever the general path must decide (it then checks everything again and gives the
    answer, refusal or audit it always gives)."""
    template = endpoint.template
    if (
        pki_request.message_type != MessageType.PKCS_REQ
        or template.approval_required
        or template.challenge_type not in (ChallengeType.NONE, ChallengeType.STATIC)
    ):
        return None
    try:
        _check_signing_time(pki_request)
        _check_csr_fits(pki_request)
    except Refusal:
        return None
    if template.challenge_type == ChallengeType.STATIC and not template.static_challenge_matches(
        pki_request.challenge_password or ""
    ):
        return None
    csr = pki_request.csr
    values = values_for()
    try:
        requested = check_csr(csr, template, values)
        spec = build_issuance_spec(
            template=template, public_key=csr.public_key(), values=values, requested=requested
        )
        cert = backend_for(template.ca).issue(spec)
    except (IssuanceRefused, *REFUSALS):
        return None
    now = timezone.now()
    row = _request_row(endpoint, pki_request, request)
    row.status, row.created_at = CertificateRequest.Status.ISSUED, now
    _store_requested(row, requested)
    certificate = certificate_row(cert=cert, template=template, source=CertificateSource.SCEP)
    certificate.created_at = now
    event = build_event(
        action=AuditAction.ISSUE,
        obj=certificate,
        request=request,
        message=f"issued by {template.ca} from template {template}",
    )
    event.created_at = now
    try:
        certificate.pk = commit.record_enrollment(
            template=template,
            request_row=row,
            certificate=certificate,
            audit_event=event,
            source_scope=AttemptCounter.Scope.SOURCE,
            source_identifier=row.source_ip or "unknown",
            now=now,
        )
    except IntegrityError:
        return None  # a serial or fingerprint collision: the general path draws again
    if certificate.pk is None:
        return None
    return Outcome(PKIStatus.SUCCESS, certificates=[cert])


def _reply(endpoint: Endpoint, request_info, outcome: Outcome) -> bytes:
    ra_certificate, ra_key = endpoint.ra
    return protocol.build_cert_rep(
        request_info=request_info,
        status=outcome.status,
        ra_certificate=ra_certificate,
        ra_key=ra_key,
        certificates=outcome.certificates,
        crl_der=outcome.crl_der,
        fail_info=outcome.fail_info,
        fail_info_text=outcome.text,
    )


HANDLERS = {}


def _handles(message_type: MessageType):
    def register(handler):
        HANDLERS[message_type] = handler
        return handler

    return register


def _answer(endpoint: Endpoint, pki_request: PKIRequest, request: HttpRequest) -> Outcome:
    keys = {AttemptCounter.Scope.SOURCE: client_ip(request) or "unknown"}
    try:
        _check_signing_time(pki_request)
        _check_csr_fits(pki_request)
        return HANDLERS[pki_request.message_type](endpoint, pki_request, request, keys)
    except Refusal as refusal:
        if refusal.counts:
            record_failed_attempt(template=endpoint.template, keys=keys)
        record_refusal(
            template=endpoint.template,
            request=request,
            reason=f"SCEP {pki_request.message_type.name} "
            f"{pki_request.transaction_id}: {refusal.reason}",
        )
        return Outcome(PKIStatus.FAILURE, fail_info=refusal.fail_info, text=refusal.reason)


def _check_signing_time(pki_request: PKIRequest) -> None:
    skew = datetime.timedelta(seconds=settings.MDMCERTS_SCEP_MAX_CLOCK_SKEW)
    signed = pki_request.signing_time
    if signed is not None and abs(timezone.now() - signed) > skew:
        raise Refusal(
            FailInfo.BAD_TIME,
            f"the message's signing time {signed:%Y-%m-%d %H:%M:%S} UTC is too far "
            "from the server's clock",
            counts=False,
        )


# What a request row holds; PostgreSQL refuses longer values (an HTTP 500, not a CertRep).
MAX_TRANSACTION_ID = CertificateRequest._meta.get_field("transaction_id").max_length
MAX_SUBJECT = CertificateRequest._meta.get_field("requested_subject").max_length
UNREADABLE_CSR = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _check_csr_fits(pki_request: PKIRequest) -> None:
    """A PKCSReq or RenewalReq whose request row can be written: ``cryptography`` reads a
    CSR's key, subject and extensions only when asked, and raises on ones it cannot read."""
    csr = pki_request.csr
    if csr is None:
        return
    if len(pki_request.transaction_id) > MAX_TRANSACTION_ID:
        raise Refusal(
            FailInfo.BAD_REQUEST,
            f"the transactionID is longer than {MAX_TRANSACTION_ID} characters",
        )
    try:
        csr.public_key()
        subject = csr.subject.rfc4514_string()
        csr.extensions  # noqa: B018 -- parsed here so that the CSR rules cannot fail on it
    except UNREADABLE_CSR:
        raise Refusal(
            FailInfo.BAD_REQUEST,
            "the CSR cannot be read or uses an algorithm mdmcerts does not support",
        ) from None
    if len(subject) > MAX_SUBJECT:
        raise Refusal(
            FailInfo.BAD_REQUEST, f"the CSR's subject is longer than {MAX_SUBJECT} characters"
        )


def _public_key_sha256(public_key) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@_handles(MessageType.PKCS_REQ)
def _pkcs_req(endpoint: Endpoint, pki_request: PKIRequest, request, keys) -> Outcome:
    def attempt() -> Outcome:
        _check_lockout(endpoint, keys)
        with transaction.atomic():
            row = _claim_transaction(endpoint, pki_request, request)
            device, user, profile = _redeem(endpoint, pki_request, keys)
            return _enroll(
                endpoint,
                pki_request,
                row,
                device=device,
                user=user,
                profile=profile,
                request=request,
                keys=keys,
            )

    return _once(endpoint, pki_request, attempt)


@_handles(MessageType.RENEWAL_REQ)
def _renewal_req(endpoint: Endpoint, pki_request: PKIRequest, request, keys) -> Outcome:
    def attempt() -> Outcome:
        current = _renewable_certificate(endpoint, pki_request)
        with transaction.atomic():
            row = _claim_transaction(endpoint, pki_request, request, renewal_of=current)
            _lock_for_renewal(current)
            outcome = _enroll(
                endpoint,
                pki_request,
                row,
                device=current.device,
                user=current.user,
                profile=current.profile,
                request=request,
                keys=keys,
                replaces=current,
            )
            Certificate.objects.filter(pk=current.pk).update(status=CertificateStatus.SUPERSEDED)
            return outcome

    return _once(endpoint, pki_request, attempt)


def _lock_for_renewal(current: Certificate) -> None:
    """Renewals of one certificate take turns; the later one finds it superseded.

    The request row is claimed first, so a duplicate of the *same* renewal waits on that
    instead and gets the first answer."""
    still_active = (
        Certificate.objects.select_for_update()
        .filter(pk=current.pk, status=CertificateStatus.ACTIVE)
        .exists()
    )
    if not still_active:
        raise Refusal(
            FailInfo.BAD_MESSAGE_CHECK, "the signing certificate was renewed already", counts=False
        )


def _once(endpoint: Endpoint, pki_request: PKIRequest, attempt) -> Outcome:
    """Exactly once per transactionID: a replay gets the first answer; a copy that raced
    another to insert the request row waits for it (the unique index) and then gets its
    answer, or tries again if the other copy was refused and left nothing."""
    for _ in range(2):
        replay = _replayed(endpoint, pki_request)
        if replay is not None:
            return replay
        try:
            return attempt()
        except IntegrityError:
            continue
    return Outcome(PKIStatus.PENDING)


def _check_lockout(endpoint: Endpoint, keys: dict) -> None:
    remaining = lockout_remaining(template=endpoint.template, keys=keys)
    if remaining is not None:
        seconds = math.ceil(remaining.total_seconds())  # 120 s left reads 120, not 121
        raise Refusal(
            FailInfo.BAD_REQUEST,
            f"too many failed attempts; try again in {seconds} seconds",
            counts=False,
        )


def _claim_transaction(
    endpoint: Endpoint, pki_request: PKIRequest, request, renewal_of: Certificate | None = None
) -> CertificateRequest:
    """The request row, inserted first: its unique transactionID serializes duplicates."""
    row = _request_row(endpoint, pki_request, request, renewal_of=renewal_of)
    row.save(force_insert=True)
    return row


def _request_row(
    endpoint: Endpoint, pki_request: PKIRequest, request, renewal_of: Certificate | None = None
) -> CertificateRequest:
    """A pending request row for ``pki_request``, not saved."""
    csr = pki_request.csr
    public_key_der = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertificateRequest(
        template=endpoint.template,
        transaction_id=pki_request.transaction_id,
        renewal=renewal_of is not None,
        renewal_of=renewal_of,
        public_key_sha256=hashlib.sha256(public_key_der).hexdigest(),
        public_key_der=public_key_der,
        requested_subject=csr.subject.rfc4514_string(),
        status=CertificateRequest.Status.PENDING,
        source_ip=client_ip(request),
    )


def _redeem(endpoint: Endpoint, pki_request: PKIRequest, keys: dict):
    """Check the challenge; a dynamic one is used up and names the device, user and
    profile (of the delivery that minted it)."""
    template = endpoint.template
    presented = pki_request.challenge_password or ""
    if template.challenge_type == ChallengeType.NONE:
        return None, None, None
    if template.challenge_type == ChallengeType.STATIC:
        if not template.static_challenge_matches(presented):
            raise Refusal(FailInfo.BAD_REQUEST, "the challenge password is wrong")
        return None, None, None
    challenge = redeem_challenge(template=template, value=presented)
    if challenge is None:
        raise Refusal(FailInfo.BAD_REQUEST, "the challenge password is wrong, expired or used")
    if challenge.device_id:
        keys[AttemptCounter.Scope.DEVICE] = str(challenge.device_id)
        _check_lockout(endpoint, keys)
    return challenge.device, challenge.user, challenge.profile


def _enroll(
    endpoint: Endpoint,
    pki_request: PKIRequest,
    row: CertificateRequest,
    *,
    device,
    user,
    request,
    keys,
    replaces: Certificate | None = None,
    profile=None,
) -> Outcome:
    template = endpoint.template
    values = values_for(user=user, device=device)
    try:
        requested = check_csr(pki_request.csr, template, values)
        _store_requested(row, requested)
        row.device, row.user, row.profile = device, user, profile
        if template.approval_required and replaces is None:
            row.save()
            record_event(
                action=AuditAction.ISSUE,
                obj=row,
                request=request,
                message="SCEP request waits for approval",
            )
            return Outcome(PKIStatus.PENDING)
        certificate = sign_and_record(
            template=template,
            public_key=pki_request.csr.public_key(),
            values=values,
            requested=requested,
            source=CertificateSource.SCEP,
            user=user,
            device=device,
            replaces=replaces,
            request=request,
            profile=profile,
        )
    except IssuanceRefused as exc:
        raise Refusal(FailInfo.BAD_REQUEST, str(exc)) from exc
    row.status, row.certificate = CertificateRequest.Status.ISSUED, certificate
    row.save()
    clear_failed_attempts(template=template, keys=keys)
    return Outcome(PKIStatus.SUCCESS, certificates=[certificate.certificate])


def _store_requested(row: CertificateRequest, requested: RequestedNames) -> None:
    row.requested_subject = requested.subject or row.requested_subject
    row.requested_sans = "\n".join(f"{kind}:{value}" for kind, value in requested.sans)


def _replayed(endpoint: Endpoint, pki_request: PKIRequest) -> Outcome | None:
    """The answer already given to this transaction, if it exists (same key only)."""
    # Asked before every enrollment and nearly always empty: no ORDER BY (the pair is
    # unique) and no join; a replay loads its certificate when it needs it.
    rows = CertificateRequest.objects.filter(
        template=endpoint.template, transaction_id=pki_request.transaction_id
    ).order_by()[:1]
    row = next(iter(rows), None)
    if row is None:
        return None
    if row.public_key_sha256 != _public_key_sha256(pki_request.csr.public_key()):
        raise Refusal(FailInfo.BAD_REQUEST, "this transactionID was used with another key")
    return _status_of(row)


def _status_of(row: CertificateRequest) -> Outcome:
    if row.status == CertificateRequest.Status.ISSUED and row.certificate is not None:
        return Outcome(PKIStatus.SUCCESS, certificates=[row.certificate.certificate])
    if row.status == CertificateRequest.Status.REJECTED:
        return Outcome(
            PKIStatus.FAILURE,
            fail_info=FailInfo.BAD_REQUEST,
            text=row.reason or "the request was rejected",
        )
    return Outcome(PKIStatus.PENDING)


def _renewable_certificate(endpoint: Endpoint, pki_request: PKIRequest) -> Certificate:
    """The current certificate that signed a RenewalReq, if it may renew here."""
    template = endpoint.template
    if not template.auto_renew:
        raise Refusal(FailInfo.BAD_REQUEST, "this template does not allow renewal")
    signer = pki_request.signer_certificate
    current = (
        Certificate.objects.select_related("device", "user")
        .filter(fingerprint_sha256=crypto.fingerprint_sha256(signer), ca=endpoint.ca)
        .first()
    )
    now = timezone.now()
    if current is None:
        raise Refusal(
            FailInfo.BAD_MESSAGE_CHECK, "the renewal is not signed by a certificate this CA issued"
        )
    if current.status != CertificateStatus.ACTIVE or current.not_after <= now:
        raise Refusal(
            FailInfo.BAD_MESSAGE_CHECK,
            f"the signing certificate is {current.get_status_display().lower()}"
            if current.status != CertificateStatus.ACTIVE
            else "the signing certificate has expired",
        )
    if current.template_id != template.pk:
        raise Refusal(
            FailInfo.BAD_MESSAGE_CHECK, "the signing certificate was issued from another template"
        )
    opens = renewal_opens(current, template)
    if now < opens:
        raise Refusal(
            FailInfo.BAD_REQUEST, f"renewal opens on {opens:%Y-%m-%d %H:%M} UTC", counts=False
        )
    return current


def renewal_opens(certificate: Certificate, template: CertificateTemplate) -> datetime.datetime:
    """When a certificate enters its template's renewal window ("renew N days before
    expiry", or half-life when the validity is shorter than twice the window)."""
    window = datetime.timedelta(days=template.renew_before_days)
    lifetime = certificate.not_after - certificate.not_before
    if lifetime < 2 * window:
        window = lifetime / 2
    return certificate.not_after - window


@_handles(MessageType.CERT_POLL)
def _cert_poll(endpoint: Endpoint, pki_request: PKIRequest, request, keys) -> Outcome:
    row = (
        CertificateRequest.objects.select_related("certificate")
        .filter(template=endpoint.template, transaction_id=pki_request.transaction_id)
        .first()
    )
    if row is None:
        raise Refusal(FailInfo.BAD_CERT_ID, "no request with this transactionID")
    signer_key = _public_key_sha256(pki_request.signer_certificate.public_key())
    if signer_key != row.public_key_sha256:
        raise Refusal(
            FailInfo.BAD_MESSAGE_CHECK, "the poll is not signed with the key of the request"
        )
    return _status_of(row)


@_handles(MessageType.GET_CERT)
def _get_cert(endpoint: Endpoint, pki_request: PKIRequest, request, keys) -> Outcome:
    wanted = pki_request.issuer_and_serial
    certificate = None
    if wanted.issuer == endpoint.ca.certificate.subject:
        certificate = Certificate.objects.filter(
            ca=endpoint.ca, serial=format(wanted.serial, "x")
        ).first()
    if certificate is None:
        raise Refusal(
            FailInfo.BAD_CERT_ID, "no certificate with this issuer and serial number", counts=False
        )
    return Outcome(PKIStatus.SUCCESS, certificates=[certificate.certificate])


@_handles(MessageType.GET_CRL)
def _get_crl(endpoint: Endpoint, pki_request: PKIRequest, request, keys) -> Outcome:
    if pki_request.issuer_and_serial.issuer != endpoint.ca.certificate.subject:
        raise Refusal(FailInfo.BAD_CERT_ID, "this CA did not issue that certificate", counts=False)
    return Outcome(PKIStatus.SUCCESS, crl_der=current_crl(endpoint.ca))
