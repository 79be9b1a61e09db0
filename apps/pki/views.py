"""Public PKI views: what relying parties fetch without signing in."""

from cryptography.hazmat.primitives import serialization
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from apps.pki.models import CertificateAuthority


@require_safe
def ca_certificate(request: HttpRequest, slug: str) -> HttpResponse:
    """The CA certificate in DER (the AIA caIssuers URL issued certificates carry)."""
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    return HttpResponse(der, content_type="application/pkix-cert")
