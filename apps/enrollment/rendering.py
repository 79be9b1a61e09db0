"""Turning a template (and, where it allows, a CSR) into what the CA will sign."""

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RequestedNames:
    """What a request asked for that a "subject from request" template may use: its subject
    (RFC 4514) and the SANs of the allowed types (``(san_type, value)`` pairs). Plain data,
    so a pending request can keep it."""

    subject: str
    sans: tuple[tuple[str, str], ...] = ()


def san_pair(name: x509.GeneralName) -> tuple[str | None, str]:
    if isinstance(name, x509.OtherName):
        if name.type_id == UPN_OID:
            return SanType.UPN, UTF8String.load(name.value).native
        return None, name.type_id.dotted_string
    return SAN_CLASSES.get(type(name)), str(name.value)


def check_request(
    template: CertificateTemplate, csr: x509.CertificateSigningRequest, values: Mapping[str, str]
) -> RequestedNames:
    """Refuse a request that asks for more than the template gives; return its names.

    CA rights, keyCertSign/cRLSign, anyExtendedKeyUsage, usages or EKUs beyond the
    template's, SANs the template would not render and unknown critical extensions are
    refused. With "subject from request", SANs of types the template does not allow are
    dropped instead, as the product documents describe.
    """
    check_key(template, csr.public_key())
    requested_sans: list[x509.GeneralName] = []
    for ext in csr.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            requested_sans = list(value)
        elif isinstance(value, x509.BasicConstraints):
            if value.ca:
                raise TemplateRequestError("the request asks for a CA certificate")
        elif isinstance(value, x509.KeyUsage):
            _check_key_usage(template, value)
        elif isinstance(value, x509.ExtendedKeyUsage):
            _check_ekus(template, value)
        elif ext.critical and not isinstance(value, x509.SubjectKeyIdentifier):
            raise TemplateRequestError(
                f"the request has a critical extension {ext.oid.dotted_string} "
                "the template does not allow"
            )
    if template.subject_source == SubjectSource.REQUEST:
        allowed = set(template.allowed_request_san_types)
        pairs = [san_pair(name) for name in requested_sans]
        return RequestedNames(
            subject=csr.subject.rfc4514_string(), sans=tuple(p for p in pairs if p[0] in allowed)
        )
    rendered = set(render_sans(template, values))
    for name in requested_sans:
        if name not in rendered:
            san_type, text = san_pair(name)
            raise TemplateRequestError(
                f"the request asks for the SAN {san_type or 'other'}:{text}, "
                "which the template does not give"
            )
    return RequestedNames(subject="")


def _check_key_usage(template: CertificateTemplate, usage: x509.KeyUsage) -> None:
    allowed = {
        "digital_signature": template.key_usage_digital_signature,
        "key_encipherment": template.key_usage_key_encipherment,
    }
    for bit in (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    ):
        if getattr(usage, bit) and not allowed.get(bit, False):
            raise TemplateRequestError(
                f"the request asks for key usage {bit}, which the template does not give"
            )


def _check_ekus(template: CertificateTemplate, ekus: x509.ExtendedKeyUsage) -> None:
    for oid in ekus:
        if oid.dotted_string not in template.extended_key_usages:
            raise TemplateRequestError(
                f"the request asks for extended key usage "
                f"{oid.dotted_string}, which the template does not give"
            )


def build_issuance_spec(
    *,
    template: CertificateTemplate,
    public_key,
    values: Mapping[str, str],
    requested: RequestedNames | None = None,
) -> IssuanceSpec:
    """What to sign: subject, SANs, usages and validity from the template (the subject and
    allowed SANs from ``requested`` when the template takes them from the request)."""
    check_key(template, public_key)
    if template.subject_source == SubjectSource.REQUEST and requested is not None:
        subject = x509.Name.from_rfc4514_string(requested.subject)
        sans = [general_name(san_type, value) for san_type, value in requested.sans]
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
