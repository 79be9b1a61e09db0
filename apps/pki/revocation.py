"""Revocation status of local CAs' certificates: the published CRL and OCSP answers.

Kept apart from ``services.py`` because it reads the certificate inventory
(``apps.certificates``), which itself builds on ``apps.pki.services``.
"""

import datetime

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.certificates.choices import CertificateStatus
from apps.certificates.models import Certificate
from apps.pki import crypto, ocsp
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority, CertificateRevocationList
from apps.pki.services import ensure_ocsp_signer, sign_crl

CRL_REPUBLISH_MARGIN = datetime.timedelta(days=2)
OCSP_MAX_REQUEST_BYTES = 16 * 1024


def publish_crl(
    ca: CertificateAuthority, *, fresh_until: datetime.datetime | None = None
) -> CertificateRevocationList:
    """Sign and store a new CRL of every certificate ``ca`` revoked, with the next CRL
    number (taken under the CA's row lock, so numbers only grow, and two publications
    never interleave).

    With ``fresh_until``, a stored CRL whose nextUpdate is later is kept and returned
    instead, so a sweep that runs twice at the same time publishes once.
    """
    with transaction.atomic():
        ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        current = CertificateRevocationList.objects.filter(ca=ca).first()
        if fresh_until is not None and current and current.next_update > fresh_until:
            return current
        ca.crl_number += 1
        ca.save(update_fields=["crl_number"])
        revoked = (
            Certificate.objects.filter(ca=ca, status=CertificateStatus.REVOKED)
            .order_by("revoked_at", "pk")
            .values_list("serial", "revoked_at", "revocation_reason")
        )
        crl = sign_crl(ca, number=ca.crl_number, revoked=revoked.iterator(chunk_size=2000))
        row = current or CertificateRevocationList(ca=ca)
        row.number = ca.crl_number
        row.der = crl.public_bytes(serialization.Encoding.DER)
        row.this_update, row.next_update = crl.last_update_utc, crl.next_update_utc
        row.revoked_count = len(crl)
        row.save(force_insert=current is None)
    return row


def published_crl(ca: CertificateAuthority) -> CertificateRevocationList:
    """The CRL relying parties get: the stored one, or a new one when there is none yet
    or it has passed its nextUpdate (the beat sweep was late)."""
    now = timezone.now()
    current = CertificateRevocationList.objects.filter(ca=ca).first()
    if current is not None and current.next_update > now:
        return current
    return publish_crl(ca, fresh_until=now)


def crl_republish_margin() -> datetime.timedelta:
    """How long before nextUpdate a CRL is republished (``PKI_CRL_REPUBLISH_MARGIN``)."""
    return getattr(settings, "PKI_CRL_REPUBLISH_MARGIN", CRL_REPUBLISH_MARGIN)


def publish_due_crls(
    now: datetime.datetime | None = None, *, margin: datetime.timedelta | None = None
) -> list[CertificateRevocationList]:
    """Publish a CRL for every valid local CA whose CRL is missing or reaches its
    nextUpdate within ``margin``; the CRLs published (for the beat task to report).
    Idempotent: a CRL published meanwhile by another run is not published again."""
    now = now or timezone.now()
    fresh_until = now + (margin if margin is not None else crl_republish_margin())
    due = (
        CertificateAuthority.objects.filter(kind=CAKind.LOCAL, not_after__gt=now)
        .exclude(private_key="")
        .filter(Q(published_crl__isnull=True) | Q(published_crl__next_update__lte=fresh_until))
        .order_by("pk")
    )
    published = []
    for ca in due:
        before = CertificateRevocationList.objects.filter(ca=ca).values_list("number").first()
        row = publish_crl(ca, fresh_until=fresh_until)
        if before is None or row.number != before[0]:
            published.append(row)
    return published


def serial_status(ca: CertificateAuthority, serial: int) -> ocsp.SerialStatus | None:
    """What the inventory says of ``serial`` under ``ca``: None if ``ca`` never issued it.

    Only revocation makes a certificate not good: pending revocation, superseded and
    expired certificates are still good to OCSP, as they are absent from the CRL.
    """
    row = (
        Certificate.objects.filter(ca=ca, serial=format(serial, "x"))
        .values_list("status", "revoked_at", "revocation_reason")
        .first()
    )
    if row is None:
        return None
    status, revoked_at, reason = row
    if status != CertificateStatus.REVOKED:
        return ocsp.GOOD
    return ocsp.SerialStatus(revoked_at=revoked_at, reason=reason)


def answer_ocsp(ca: CertificateAuthority, request_der: bytes) -> ocsp.Answer:
    """The OCSP response to ``request_der``, signed by the CA's delegated OCSP signer
    (made on first use, renewed near its expiry)."""
    ca = ensure_ocsp_signer(ca)
    responder = ocsp.Responder(
        issuer=ca.certificate,
        signer=ca.ocsp_certificate,
        signer_key=ca.load_ocsp_key(),
        signature_hash=crypto.signature_hash(ca.signature_hash),
    )
    return ocsp.respond(
        request_der,
        responder=responder,
        lookup=lambda serial: serial_status(ca, serial),
        now=timezone.now(),
    )
