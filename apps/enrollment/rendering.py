"""Turning a template (and, where it allows, a CSR) into what the CA will sign."""

import datetime
from collections.abc import Mapping

from asn1crypto.core import UTF8String
from cryptography import x509

from apps.enrollment.choices import SanType, SubjectSource
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.variables import render
from apps.pki import crypto
from apps.pki.backends import IssuanceSpec

UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SAN_CLASSES = {
    x509.RFC822Name: SanType.RFC822,
    x509.DNSName: SanType.DNS,
    x509.UniformResourceIdentifier: SanType.URI,
}


class TemplateRequestError(Exception):
    """The request cannot be served by this template; the message is safe to show."""


def render_subject(template: CertificateTemplate, values: Mapping[str, str]) -> x509.Name:
    rendered = []
    for oid, value in crypto.parse_name_pattern(template.subject):
        label = crypto.SHORT_NAMES.get(oid, oid.dotted_string)
        rendered.append((oid, render(value, values, where=f"subject {label}")))
    return crypto.build_name(rendered)


def general_name(san_type: str, value: str) -> x509.GeneralName:
    if san_type == SanType.RFC822:
        return x509.RFC822Name(value)
    if san_type == SanType.DNS:
        return x509.DNSName(value.encode("idna").decode("ascii"))
    if san_type == SanType.URI:
        return x509.UniformResourceIdentifier(value)
    if san_type == SanType.UPN:
        return x509.OtherName(UPN_OID, UTF8String(value).dump())
    raise ValueError(f"unknown SAN type {san_type!r}")


def render_sans(template: CertificateTemplate, values: Mapping[str, str]) -> list[x509.GeneralName]:
    names = []
    for row in template.san_rows.all():
        value = render(row.value, values, where=f"{row.get_san_type_display()} SAN")
        try:
            names.append(general_name(row.san_type, value))
        except (ValueError, UnicodeError) as exc:
            raise TemplateRequestError(
                f"{row.get_san_type_display()} SAN {value!r} is not valid: {exc}"
            ) from exc
    return names


def check_key(template: CertificateTemplate, public_key) -> None:
    """The request's key must be of the template's type and at least its size."""
    wanted_kind, wanted_bits = crypto.KEY_STRENGTH[template.key_algorithm]
    kind, bits = crypto.key_strength(public_key)
    if kind != wanted_kind or bits < wanted_bits:
        raise TemplateRequestError(
            f"the key must be {template.get_key_algorithm_display()} or stronger "
            f"(got {kind.upper()} {bits})"
        )


def _sans_from_request(
    template: CertificateTemplate, csr: x509.CertificateSigningRequest
) -> list[x509.GeneralName]:
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    allowed = set(template.allowed_request_san_types)
    kept = []
    for name in requested:
        san_type = SAN_CLASSES.get(type(name))
        if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            san_type = SanType.UPN
        if san_type in allowed:
            kept.append(name)
    return kept


def build_issuance_spec(
    *,
    template: CertificateTemplate,
    public_key,
    values: Mapping[str, str],
    csr: x509.CertificateSigningRequest | None = None,
) -> IssuanceSpec:
    """What to sign: subject, SANs, usages and validity from the template."""
    check_key(template, public_key)
    if template.subject_source == SubjectSource.REQUEST and csr is not None:
        subject, sans = csr.subject, _sans_from_request(template, csr)
    else:
        subject, sans = render_subject(template, values), render_sans(template, values)
    return IssuanceSpec(
        public_key=public_key,
        subject=subject,
        sans=tuple(sans),
        validity=datetime.timedelta(days=template.validity_days),
        digital_signature=template.key_usage_digital_signature,
        key_encipherment=template.key_usage_key_encipherment,
        extended_key_usages=tuple(x509.ObjectIdentifier(o) for o in template.extended_key_usages),
    )
