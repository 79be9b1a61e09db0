"""CA servers."""

from functools import cached_property

from cryptography import x509
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from apps.core import secrets
from apps.core.fields import EncryptedSecretField, secret_context
from apps.pki import crypto
from apps.pki.choices import CAKind, ExternalChallengeType, KeyAlgorithm, SignatureHash

EXTERNAL_SECRET_FIELDS = ("scep_static_challenge", "ndes_password")


class CertificateAuthority(models.Model):
    """A CA server: where the certificates of a request template come from.

    ``kind`` picks the issuer backend. A local CA holds its certificate and its private key,
    the key encrypted under the KEK; ``parent`` is the local CA that signed it, if any.

    An external SCEP CA (kind ``scep``) holds no key: ``certificate_pem`` and its derived
    fields pin the CA certificate its GetCACert returned (or an admin uploaded),
    ``chain_pem`` the rest of that answer (RA certificates, intermediates), and the
    ``scep_*``/``ndes_*`` fields say how to reach it. Its secrets (static challenge, NDES
    password) are encrypted under the KEK like every other.
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
    scep_url = models.URLField(
        "SCEP URL",
        max_length=500,
        blank=True,
        help_text="External SCEP CA only, e.g. https://ndes.example.com/certsrv/mscep/mscep.dll.",
    )
    scep_challenge_type = models.CharField(
        "challenge type",
        max_length=10,
        choices=ExternalChallengeType.choices,
        default=ExternalChallengeType.NONE,
        help_text="What the external CA expects as challenge password.",
    )
    scep_static_challenge = EncryptedSecretField(verbose_name="static challenge")
    ndes_challenge_url = models.URLField(
        "SCEP challenge URL",
        max_length=500,
        blank=True,
        help_text="NDES admin page that hands out challenges, e.g. "
        "http://ndes.example.com/certsrv/mscep_admin/.",
    )
    ndes_username = models.CharField("challenge username", max_length=200, blank=True)
    ndes_password = EncryptedSecretField(verbose_name="challenge password")
    ndes_challenge_length = models.PositiveSmallIntegerField(
        "SCEP challenge length",
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(256)],
        help_text="Characters in an NDES challenge: NDES's PasswordLength (bytes, default 8) "
        "shown as hexadecimal, so 16 by default.",
    )
    scep_retry_seconds = models.PositiveIntegerField(
        "retry timeout (seconds)",
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="Wait between polls (CertPoll) while the CA answers PENDING.",
    )
    scep_max_pending_retries = models.PositiveSmallIntegerField(
        "max retries when pending",
        default=3,
        validators=[MaxValueValidator(100)],
        help_text="Polls within one attempt; after them the enrollment stays pending and is "
        "resumed later with the same transaction id.",
    )
    scep_request_timeout_seconds = models.PositiveSmallIntegerField(
        "request timeout (seconds)",
        default=15,
        validators=[MinValueValidator(1), MaxValueValidator(300)],
        help_text="Every request to the SCEP or challenge URL gives up after this long.",
    )
    scep_allow_single_des = models.BooleanField(
        "accept single-DES answers (legacy CAs)",
        default=False,
        help_text="Single DES is broken. Only for a CA that answers with nothing else, such as "
        "micromdm scepserver 2.1; requests to it are still encrypted with AES or 3DES.",
    )
    tls_trust_bundle_pem = models.TextField(
        "TLS trust bundle",
        blank=True,
        help_text="PEM certificates trusted, beside the system's, for https SCEP and "
        "challenge URLs.",
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
    def is_external_scep(self) -> bool:
        return self.kind == CAKind.SCEP

    def set_secret(self, field_name: str, value: str) -> None:
        """Encrypt ``value`` into one of the external CA's secret fields ("" clears it)."""
        if field_name not in EXTERNAL_SECRET_FIELDS:
            raise ValueError(f"{field_name} is not a secret of an external CA")
        token = (
            secrets.encrypt(value.encode(), context=secret_context(type(self), field_name))
            if value
            else ""
        )
        setattr(self, field_name, token)

    def reveal_secret(self, field_name: str) -> str:
        """The clear value of an external CA secret, for the request that needs it only."""
        if field_name not in EXTERNAL_SECRET_FIELDS:
            raise ValueError(f"{field_name} is not a secret of an external CA")
        token = getattr(self, field_name)
        if not token:
            return ""
        return secrets.decrypt(token, context=secret_context(type(self), field_name)).decode()

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
        try:
            basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:  # an external CA's certificate may omit it
            basic = x509.BasicConstraints(ca=True, path_length=None)
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
