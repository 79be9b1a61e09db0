"""The local CA: mdmcerts signs with the CA key it holds."""

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.utils import timezone

from apps.pki import crypto
from apps.pki.backends import IssuanceError, IssuanceSpec
from apps.pki.models import CertificateAuthority
from apps.pki.services import BACKDATE, add_revocation_pointers

FORBIDDEN_EKUS = {ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}


class LocalIssuer:
    """Signs end-entity certificates: CA:FALSE, key usage and EKUs from the spec only."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    def issue(self, spec: IssuanceSpec) -> x509.Certificate:
        ca = self.ca
        if not ca.has_private_key:
            raise IssuanceError(f"CA server {ca.name} has no private key to sign with.")
        now = timezone.now()
        if not ca.is_valid_now:
            raise IssuanceError(f"CA server {ca.name} is not valid now.")
        not_after = min(now + spec.validity, ca.not_after)
        builder = (
            x509.CertificateBuilder()
            .subject_name(spec.subject)
            .issuer_name(ca.certificate.subject)
            .public_key(spec.public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(max(now - BACKDATE, ca.not_before))
            .not_valid_after(not_after)
        )
        builder = self._extensions(builder, spec)
        return builder.sign(ca.load_private_key(), crypto.signature_hash(ca.signature_hash))

    def _extensions(self, builder: x509.CertificateBuilder, spec: IssuanceSpec):
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if spec.digital_signature or spec.key_encipherment:
            builder = builder.add_extension(
                crypto.key_usage(
                    digital_signature=spec.digital_signature,
                    key_encipherment=spec.key_encipherment,
                ),
                critical=True,
            )
        ekus = [oid for oid in spec.extended_key_usages if oid not in FORBIDDEN_EKUS]
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if spec.sans:
            # RFC 5280 4.2.1.6: critical when the subject is empty.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(spec.sans)), critical=len(spec.subject) == 0
            )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(spec.public_key), critical=False
        ).add_extension(crypto.authority_key_identifier(self.ca.certificate), critical=False)
        return add_revocation_pointers(builder, self.ca)
