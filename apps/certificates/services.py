"""Issuing, recording and revoking certificates."""

import logging
from collections.abc import Mapping

from asn1crypto.core import UTF8String
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.certificates.models import Certificate, CertificateRequest
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import (
    UPN_OID,
    RequestedNames,
    TemplateRequestError,
    build_issuance_spec,
    check_request,
)
from apps.enrollment.variables import VariableValueMissing, values_for
from apps.pki import crypto
from apps.pki.backends import IssuanceError, backend_for
from apps.pki.choices import RevocationReason
from apps.pki.revocation import publish_crl, published_crl

logger = logging.getLogger(__name__)
SERIAL_ATTEMPTS = 3


class AlreadyRevoked(Exception):
    """The certificate is revoked already; revocation happens once."""


class IssuanceRefused(Exception):
    """The certificate was not issued; ``str()`` is a reason safe to show and to audit."""


def describe_sans(cert: x509.Certificate) -> str:
    """SANs as lines of ``TYPE:value`` (email, DNS, URI, UPN, IP, other)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    lines = []
    for name in names:
        if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            lines.append(f"UPN:{UTF8String.load(name.value).native}")
        elif isinstance(name, x509.OtherName):
            lines.append(f"othername:{name.type_id.dotted_string}")
        else:
            label = {
                x509.RFC822Name: "email",
                x509.DNSName: "DNS",
                x509.UniformResourceIdentifier: "URI",
                x509.IPAddress: "IP",
            }.get(type(name))
            lines.append(f"{label or type(name).__name__}:{name.value}")
    return "\n".join(lines)


def record_certificate(**fields) -> Certificate:
    """Insert the inventory row for a certificate the caller just obtained (the arguments
    of ``certificate_row``)."""
    row = certificate_row(**fields)
    row.save(force_insert=True)
    return row


def certificate_row(
    *,
    cert: x509.Certificate,
    template: CertificateTemplate | None,
    source: str,
    user=None,
    device=None,
    replaces: Certificate | None = None,
    profile=None,
) -> Certificate:
    """The inventory row for ``cert``, not saved."""
    return Certificate(
        ca=template.ca,
        template=template,
        serial=crypto.serial_hex(cert),
        subject=crypto.format_name(cert.subject),
        subject_alt_names=describe_sans(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=crypto.fingerprint_sha256(cert),
        certificate_pem=crypto.cert_pem(cert),
        source=source,
        user=user,
        device=device,
        replaces=replaces,
        profile=profile,
    )


REFUSALS = (VariableValueMissing, TemplateRequestError, IssuanceError)


def check_csr(
    csr: x509.CertificateSigningRequest, template: CertificateTemplate, values: Mapping[str, str]
) -> RequestedNames:
    """Proof of possession and the template's request policy; ``IssuanceRefused`` if not."""
    if not csr.is_signature_valid:
        raise IssuanceRefused("the request's signature does not verify (proof of possession)")
    try:
        return check_request(template, csr, values)
    except REFUSALS as exc:
        raise IssuanceRefused(str(exc)) from exc


def sign_and_record(
    *,
    template: CertificateTemplate,
    public_key,
    values: Mapping[str, str],
    requested: RequestedNames | None,
    source: str,
    user=None,
    device=None,
    replaces: Certificate | None = None,
    actor=None,
    request=None,
    profile=None,
) -> Certificate:
    """Sign as the template says and record the row and its audit event (in the caller's
    transaction, if any). Refusals are ``IssuanceRefused``."""
    try:
        spec = build_issuance_spec(
            template=template, public_key=public_key, values=values, requested=requested
        )
        backend = backend_for(template.ca)
        for attempt in range(SERIAL_ATTEMPTS):
            cert = backend.issue(spec)
            try:
                with transaction.atomic():
                    row = record_certificate(
                        cert=cert,
                        template=template,
                        source=source,
                        user=user,
                        device=device,
                        replaces=replaces,
                        profile=profile,
                    )
                    record_event(
                        action=AuditAction.ISSUE,
                        obj=row,
                        actor=actor,
                        request=request,
                        message=f"issued by {template.ca} from template {template}",
                    )
                    return row
            except IntegrityError:
                # A random 159-bit serial collided with one already issued by this CA.
                logger.warning(
                    "serial collision on CA %s (attempt %d)", template.ca.pk, attempt + 1
                )
    except REFUSALS as exc:
        raise IssuanceRefused(str(exc)) from exc
    raise IssuanceRefused("no unique serial number could be assigned")


def record_refusal(*, template: CertificateTemplate, reason: str, actor=None, request=None) -> None:
    """The audit event of a refused enrollment: the only trace it leaves (with counters)."""
    record_event(
        action=AuditAction.ISSUE_FAILED, obj=template, actor=actor, request=request, message=reason
    )


def issue_certificate(
    csr: x509.CertificateSigningRequest,
    template: CertificateTemplate,
    context: Mapping[str, str],
    *,
    user=None,
    device=None,
    source: str = CertificateSource.SCEP,
    actor=None,
    request=None,
) -> Certificate:
    """Issue a certificate for ``csr`` as ``template`` says, record it and audit it.

    ``context`` holds the lookup-variable values for the device and user. Every refusal is
    an ``IssuanceRefused`` with a reason, recorded as an audit event; nothing else changes.
    """
    try:
        requested = check_csr(csr, template, context)
        return sign_and_record(
            template=template,
            public_key=csr.public_key(),
            values=context,
            requested=requested,
            source=source,
            user=user,
            device=device,
            actor=actor,
            request=request,
        )
    except IssuanceRefused as refusal:
        record_refusal(template=template, reason=str(refusal), actor=actor, request=request)
        raise


def revoke_certificate(
    *,
    certificate: Certificate,
    reason: str = RevocationReason.UNSPECIFIED,
    actor=None,
    request=None,
) -> Certificate:
    """Revoke now with an RFC 5280 reason. Revoking twice raises ``AlreadyRevoked``."""
    if reason not in RevocationReason.values:
        raise ValidationError({"reason": f"Unknown revocation reason {reason!r}."})
    with transaction.atomic():
        row = Certificate.objects.select_for_update().get(pk=certificate.pk)
        if row.status == CertificateStatus.REVOKED:
            raise AlreadyRevoked(f"Certificate {row.serial} is already revoked.")
        before = row.status
        row.status = CertificateStatus.REVOKED
        row.revoked_at = timezone.now()
        row.revocation_reason = reason
        row.save(update_fields=["status", "revoked_at", "revocation_reason"])
        record_event(
            action=AuditAction.REVOKE,
            obj=row,
            actor=actor,
            request=request,
            changes={"status": [before, row.status], "revocation_reason": ["", reason]},
        )
        # After commit, so the revocation's transaction does not wait for the CRL signature;
        # robust: the revocation stands if signing fails (logged); the next publication covers it.
        transaction.on_commit(lambda: publish_crl(row.ca), robust=True)
    return row


def current_crl(ca) -> bytes:
    """The CA's published CRL (DER), as the CRL URL serves it; one is published first if
    there is none yet or it is past its nextUpdate."""
    return bytes(published_crl(ca).der)


class RequestNotPending(Exception):
    """The request was decided already."""


def approve_request(*, certificate_request, actor=None, request=None) -> Certificate:
    """Issue the certificate a pending request asked for; its CertPoll then gets it.

    A refusal at this point (a variable lost its value, the CA expired) rejects the
    request with that reason instead.
    """
    with transaction.atomic():
        row = _lock_pending(certificate_request)
        public_key = serialization.load_der_public_key(bytes(row.public_key_der))
        values = values_for(user=row.user, device=row.device)
        try:
            certificate = sign_and_record(
                template=row.template,
                public_key=public_key,
                values=values,
                requested=row.requested_names,
                source=CertificateSource.SCEP,
                user=row.user,
                device=row.device,
                profile=row.profile,
                actor=actor,
                request=request,
            )
        except IssuanceRefused as refusal:
            _decide(row, CertificateRequest.Status.REJECTED, actor, reason=str(refusal))
            record_refusal(template=row.template, reason=str(refusal), actor=actor, request=request)
            failure = refusal
        else:
            row.certificate = certificate
            _decide(row, CertificateRequest.Status.ISSUED, actor)
            return certificate
    raise failure


def reject_request(*, certificate_request, reason: str = "", actor=None, request=None) -> None:
    """Refuse a pending request; its CertPoll then gets FAILURE."""
    with transaction.atomic():
        row = _lock_pending(certificate_request)
        _decide(
            row,
            CertificateRequest.Status.REJECTED,
            actor,
            reason=reason or "rejected by an administrator",
        )
        record_event(
            action=AuditAction.ISSUE_FAILED,
            obj=row,
            actor=actor,
            request=request,
            message=row.reason,
        )


def _lock_pending(certificate_request) -> CertificateRequest:
    # Only the request row is locked: PostgreSQL cannot lock the nullable side of the outer
    # joins that fetch its user and device.
    row = (
        CertificateRequest.objects.select_for_update(of=("self",))
        .select_related("template__ca", "user", "device")
        .get(pk=certificate_request.pk)
    )
    if row.status != CertificateRequest.Status.PENDING:
        raise RequestNotPending(f"{row} was decided already")
    return row


def _decide(row: CertificateRequest, status: str, actor, reason: str = "") -> None:
    row.status, row.reason = status, reason
    row.decided_at, row.decided_by = timezone.now(), actor
    row.save()
