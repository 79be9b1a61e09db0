"""CA servers."""

from functools import cached_property

from cryptography import x509
from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core import secrets
from apps.core.fields import EncryptedSecretField, secret_context
from apps.pki import crypto
from apps.pki.choices import CAKind, KeyAlgorithm, SignatureHash


class CertificateAuthority(models.Model):
    """A CA server: where the certificates of a request template come from.

    ``kind`` picks the issuer backend. A local CA holds its certificate and its private key,
    the key encrypted under the KEK; ``parent`` is the local CA that signed it, if any.
    """

    name = models.CharField("certificate authority name", max_length=200, unique=True)
    slug = models.SlugField(
        max_length=64, unique=True, help_text="Used in this CA's public URLs (/pki/<slug>/…)."
    )
    description = models.TextField(blank=True)
    kind = models.CharField(
        "server type", max_length=20, choices=CAKind.choices, default=CAKind.LOCAL
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        verbose_name="issuing CA",
    )
    certificate_pem = models.TextField("CA certificate", editable=False)
    chain_pem = models.TextField(
        "certificates above this CA",
        blank=True,
        editable=False,
        help_text="PEM of the issuers above an imported CA, nearest first.",
    )
    private_key = EncryptedSecretField()
    key_algorithm = models.CharField(max_length=10, choices=KeyAlgorithm.choices, editable=False)
    signature_hash = models.CharField(
        max_length=10,
        choices=SignatureHash.choices,
        default=SignatureHash.SHA256,
        help_text="Hash used when this CA signs.",
    )
    subject = models.CharField(max_length=500, editable=False)
    serial = models.CharField(max_length=40, editable=False)
    fingerprint_sha256 = models.CharField(
        "SHA-256 fingerprint", max_length=64, editable=False, db_index=True
    )
    not_before = models.DateTimeField(editable=False)
    not_after = models.DateTimeField(editable=False)
    path_length = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    ra_certificate_pem = models.TextField(
        "SCEP RA certificate",
        blank=True,
        editable=False,
        help_text="Signs CertReps and decrypts requests at this CA's SCEP endpoints.",
    )
    ra_private_key = EncryptedSecretField()
    successor = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The CA that takes over when this one expires (SCEP GetNextCACert).",
    )
    ocsp_certificate_pem = models.TextField(
        "OCSP signing certificate",
        blank=True,
        editable=False,
        help_text="Delegated responder certificate that signs this CA's OCSP responses.",
    )
    ocsp_private_key = EncryptedSecretField()
    crl_number = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Number of the last CRL issued."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "CA server"
        verbose_name_plural = "CA servers"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @cached_property
    def certificate(self) -> x509.Certificate:
        return crypto.load_pem_certificate(self.certificate_pem)

    @property
    def has_private_key(self) -> bool:
        return bool(self.private_key)

    @property
    def signs_locally(self) -> bool:
        """A local CA holding its key: mdmcerts can sign with it."""
        return self.kind == CAKind.LOCAL and self.has_private_key

    @property
    def is_valid_now(self) -> bool:
        return self.not_before <= timezone.now() < self.not_after

    def set_identity(self, certificate: x509.Certificate, key: crypto.PrivateKey | None) -> None:
        """Store the CA certificate, its derived fields and (encrypted) its private key."""
        self.certificate_pem = crypto.cert_pem(certificate)
        self.__dict__.pop("certificate", None)
        self.subject = crypto.format_name(certificate.subject)
        self.serial = crypto.serial_hex(certificate)
        self.fingerprint_sha256 = crypto.fingerprint_sha256(certificate)
        self.not_before = certificate.not_valid_before_utc
        self.not_after = certificate.not_valid_after_utc
        self.key_algorithm = crypto.key_algorithm_of(certificate.public_key()) or ""
        basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        self.path_length = basic.path_length
        self.private_key = (
            ""
            if key is None
            else secrets.encrypt(
                crypto.private_key_der(key), context=secret_context(type(self), "private_key")
            )
        )

    def load_private_key(self) -> crypto.PrivateKey:
        """The CA key, for signing. Never store or log it."""
        return crypto.load_stored_key(
            self.private_key, context=secret_context(type(self), "private_key")
        )

    @cached_property
    def ra_certificate(self) -> x509.Certificate | None:
        return (
            crypto.load_pem_certificate(self.ra_certificate_pem)
            if self.ra_certificate_pem
            else None
        )

    def set_ra_identity(self, certificate: x509.Certificate, key: crypto.PrivateKey) -> None:
        self.ra_certificate_pem = crypto.cert_pem(certificate)
        self.__dict__.pop("ra_certificate", None)
        self.ra_private_key = secrets.encrypt(
            crypto.private_key_der(key), context=secret_context(type(self), "ra_private_key")
        )

    def load_ra_key(self) -> crypto.PrivateKey:
        return crypto.load_stored_key(
            self.ra_private_key, context=secret_context(type(self), "ra_private_key")
        )

    @cached_property
    def ocsp_certificate(self) -> x509.Certificate | None:
        return (
            crypto.load_pem_certificate(self.ocsp_certificate_pem)
            if self.ocsp_certificate_pem
            else None
        )

    def set_ocsp_identity(self, certificate: x509.Certificate, key: crypto.PrivateKey) -> None:
        """Store the delegated OCSP signer, its key encrypted under the KEK."""
        self.ocsp_certificate_pem = crypto.cert_pem(certificate)
        self.__dict__.pop("ocsp_certificate", None)
        self.ocsp_private_key = secrets.encrypt(
            crypto.private_key_der(key), context=secret_context(type(self), "ocsp_private_key")
        )

    def load_ocsp_key(self) -> crypto.PrivateKey:
        return crypto.load_stored_key(
            self.ocsp_private_key, context=secret_context(type(self), "ocsp_private_key")
        )

    def chain(self) -> list[x509.Certificate]:
        """This CA's certificate and every issuer above it, nearest first."""
        certs, ca = [], self
        while ca is not None:
            certs.append(ca.certificate)
            if ca.chain_pem:
                certs.extend(x509.load_pem_x509_certificates(ca.chain_pem.encode()))
                break
            ca = ca.parent
        return certs

    def chain_pem_bundle(self) -> str:
        return "".join(crypto.cert_pem(cert) for cert in self.chain())

    def public_url(self, name: str) -> str:
        """The stable public URL of ``ca.crt``, ``crl`` or ``ocsp`` for this CA."""
        return f"{settings.PUBLIC_BASE_URL}/pki/{self.slug}/{name}"


class CertificateRevocationList(models.Model):
    """The current CRL of a local CA, as published at ``/pki/<slug>/crl``.

    One row per CA, replaced at each publication; ``number`` comes from the CA's
    ``crl_number``, taken under the CA's row lock so it only grows.
    """

    ca = models.OneToOneField(
        CertificateAuthority,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="published_crl",
        verbose_name="CA server",
    )
    number = models.PositiveBigIntegerField("CRL number")
    der = models.BinaryField("CRL (DER)")
    this_update = models.DateTimeField()
    next_update = models.DateTimeField(db_index=True)
    revoked_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "published CRL"
        verbose_name_plural = "published CRLs"

    def __str__(self) -> str:
        return f"CRL {self.number} of {self.ca_id}"

    @property
    def pem(self) -> str:
        return crypto.crl_pem(bytes(self.der))
