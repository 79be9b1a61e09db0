"""Template filters of the portal pages."""

from django import template

from apps.certificates.models import Certificate
from apps.pki import crypto

register = template.Library()


@register.filter
def issuer_name(cert: Certificate) -> str:
    """The issuer as the certificate names it, written like subjects are (``O=…,CN=…``)."""
    return crypto.format_name(cert.certificate.issuer)
