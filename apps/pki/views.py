"""Public PKI views: what relying parties fetch without signing in."""

import base64
import binascii
import datetime
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.x509.ocsp import OCSPResponseStatus
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from apps.pki import ocsp
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority, CertificateRevocationList
from apps.pki.revocation import OCSP_MAX_REQUEST_BYTES, answer_ocsp, published_crl


@require_safe
def ca_certificate(request: HttpRequest, slug: str) -> HttpResponse:
    """The CA certificate in DER (the AIA caIssuers URL issued certificates carry)."""
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    return HttpResponse(der, content_type="application/pkix-cert")


@require_safe
def crl_der(request: HttpRequest, slug: str) -> HttpResponse:
    """The CA's current CRL in DER (the CRL distribution point issued certificates carry)."""
    crl = published_crl(_local_ca(slug))
    return _crl_response(bytes(crl.der), "application/pkix-crl", crl)


@require_safe
def crl_pem(request: HttpRequest, slug: str) -> HttpResponse:
    """The CA's current CRL in PEM, for people and tools that want text."""
    crl = published_crl(_local_ca(slug))
    return _crl_response(crl.pem, "application/x-pem-file", crl)


@csrf_exempt
@require_POST
def ocsp_post(request: HttpRequest, slug: str) -> HttpResponse:
    """OCSP over POST (RFC 6960 A.1): the DER request is the body."""
    ca = _local_ca(slug)
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > OCSP_MAX_REQUEST_BYTES:
        return HttpResponse("OCSP request too large", status=413, content_type="text/plain")
    body = request.read(OCSP_MAX_REQUEST_BYTES + 1)
    if len(body) > OCSP_MAX_REQUEST_BYTES:
        return HttpResponse("OCSP request too large", status=413, content_type="text/plain")
    response = _ocsp_response(answer_ocsp(ca, body))
    patch_cache_control(response, no_store=True)
    return response


@require_safe
def ocsp_get(request: HttpRequest, slug: str, encoded: str) -> HttpResponse:
    """OCSP over GET (RFC 6960 A.1): the URL-encoded base64 of the DER request follows
    ``/ocsp/``. Answers may be cached by HTTP caches until their nextUpdate (RFC 5019 6)."""
    ca = _local_ca(slug)
    if len(encoded) > OCSP_MAX_REQUEST_BYTES * 2:
        return HttpResponse("OCSP request too large", status=413, content_type="text/plain")
    try:
        # The server decoded the path once; a base64 text has no "%", so decoding again
        # is harmless and covers proxies that pass it still encoded.
        text = urllib.parse.unquote(encoded).translate(str.maketrans("-_", "+/"))
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return _ocsp_response(ocsp.unsuccessful(OCSPResponseStatus.MALFORMED_REQUEST))
    answer = answer_ocsp(ca, der)
    response = _ocsp_response(answer)
    if answer.next_update is not None:
        _cache_until(response, answer.next_update, last_modified=timezone.now())
    return response


def _local_ca(slug: str) -> CertificateAuthority:
    ca = get_object_or_404(CertificateAuthority, slug=slug, kind=CAKind.LOCAL)
    if not ca.has_private_key:
        raise Http404("This CA does not sign revocation status here.")
    return ca


def _crl_response(body, content_type: str, crl: CertificateRevocationList) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["ETag"] = f'"crl-{crl.number}"'
    _cache_until(response, crl.next_update, last_modified=crl.this_update)
    return response


def _ocsp_response(answer: ocsp.Answer) -> HttpResponse:
    return HttpResponse(answer.der, content_type="application/ocsp-response")


def _cache_until(
    response: HttpResponse, until: datetime.datetime, *, last_modified: datetime.datetime
) -> None:
    seconds = max(0, int((until - timezone.now()).total_seconds()))
    patch_cache_control(response, public=True, max_age=seconds)
    response["Expires"] = http_date(until.timestamp())
    response["Last-Modified"] = http_date(last_modified.timestamp())
