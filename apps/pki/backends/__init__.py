"""Issuer backends: one module per CA server kind, chosen by ``CAKind``."""

import datetime
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority


class IssuanceError(Exception):
    """The CA cannot issue this certificate; the message is safe to show."""


@dataclass(frozen=True)
class IssuanceSpec:
    """Everything that decides a certificate's content. Built from the template only."""

    public_key: object
    subject: x509.Name
    sans: tuple[x509.GeneralName, ...]
    validity: datetime.timedelta
    digital_signature: bool
    key_encipherment: bool
    extended_key_usages: tuple[x509.ObjectIdentifier, ...]


class IssuerBackend(Protocol):
    def issue(self, spec: IssuanceSpec) -> x509.Certificate: ...


def backend_for(ca: CertificateAuthority) -> IssuerBackend:
    from apps.pki.backends.local import LocalIssuer
    from apps.pki.backends.scep import ExternalScepIssuer

    backends = {CAKind.LOCAL: LocalIssuer, CAKind.SCEP: ExternalScepIssuer}
    try:
        return backends[ca.kind](ca)
    except KeyError as exc:
        raise IssuanceError(f"CA server kind {ca.kind!r} cannot issue here") from exc
