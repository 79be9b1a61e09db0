"""Profiles, their payloads, assignments and per-device delivery; profile signers."""

import re
import uuid
from functools import cached_property

from cryptography import x509
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.certificates.choices import IdentityPurpose
from apps.core import secrets
from apps.core.fields import EncryptedSecretField, secret_context
from apps.devices.models import Device, DeviceGroup
from apps.enrollment.choices import KeyGeneration
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.variables import validate_variables
from apps.pki import crypto
from apps.pki.choices import CAKind, KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import (
    IDENTITY_PAYLOAD_KINDS,
    DeliveryStatus,
    PayloadKind,
    ProfilePlatform,
    VpnType,
    WifiSecurity,
)

IDENTIFIER_RE = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# The SCEP payload's Keysize is 1024, 2048 or 4096 and its Key Type always RSA
# (apple-profile-schemas/com.apple.security.scep.yaml); 1024 is too weak to offer.
APPLE_SCEP_KEY_ALGORITHMS = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_4096: 4096}

# The fields each kind of payload uses, in the order the editor shows them.
PAYLOAD_FIELDS: dict[str, list[str]] = {
    PayloadKind.SCEP: ["template"],
    PayloadKind.PKCS12: ["template"],
    PayloadKind.TRUSTED_CERTIFICATE: ["ca"],
    PayloadKind.WIFI: [
        "ssid",
        "hidden_network",
        "auto_join",
        "wifi_security",
        "identity",
        "trusted_server_names",
    ],
    PayloadKind.VPN: ["vpn_type", "server", "remote_identifier", "account", "identity"],
    PayloadKind.EMAIL: ["host", "use_ssl", "email_address", "user_name", "identity"],
    PayloadKind.USER_PROVIDED: ["user_identity_purpose"],
    PayloadKind.SINGLE_FILE: ["ca"],
}
REQUIRED_PAYLOAD_FIELDS: dict[str, list[str]] = {
    PayloadKind.SCEP: ["template"],
    PayloadKind.PKCS12: ["template"],
    PayloadKind.TRUSTED_CERTIFICATE: ["ca"],
    PayloadKind.WIFI: ["ssid", "wifi_security", "identity"],
    PayloadKind.VPN: ["vpn_type", "server", "identity"],
    PayloadKind.EMAIL: ["host", "email_address", "identity"],
    PayloadKind.USER_PROVIDED: ["user_identity_purpose"],
    PayloadKind.SINGLE_FILE: ["ca"],
}


class Profile(models.Model):
    """A configuration profile: ordered payloads delivered together to devices.

    ``version`` grows with every change, so devices get the profile again.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    platform = models.CharField(
        max_length=10, choices=ProfilePlatform.choices, default=ProfilePlatform.APPLE
    )
    identifier = models.CharField(
        max_length=200,
        unique=True,
        help_text="Reverse-DNS identifier (PayloadIdentifier), e.g. com.example.wifi.corp.",
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    signing_ca = models.ForeignKey(
        CertificateAuthority,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="sign with",
        help_text="Sign the .mobileconfig (CMS) with a profile-signing certificate of this CA.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.identifier and not IDENTIFIER_RE.fullmatch(self.identifier):
            errors["identifier"] = (
                "Use a reverse-DNS identifier: letters, digits and hyphens in dot-separated "
                "parts, e.g. com.example.wifi.corp."
            )
        ca = self.signing_ca if self.signing_ca_id else None
        if ca is not None and not ca.signs_locally:
            errors["signing_ca"] = (
                "Profiles are signed by a local CA that holds its key; this CA cannot sign."
            )
        if errors:
            raise ValidationError(errors)

    def audit_extra(self) -> dict:
        """Payloads and assignments belong to the profile's history (and its version)."""
        if self.pk is None:
            return {}
        return {
            "payloads": [
                payload.summary()
                for payload in self.payloads.select_related("template", "ca", "identity")
            ],
            "assignments": sorted(
                assignment.target_label()
                for assignment in self.assignments.select_related("group", "device")
            ),
        }


class ProfilePayload(models.Model):
    """One payload of a profile. Which fields matter depends on ``kind``
    (``PAYLOAD_FIELDS``); text fields may hold lookup variables, filled per device at
    delivery. ``uuid`` is the Apple PayloadUUID and stays the same across edits."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="payloads")
    position = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=PayloadKind.choices)
    display_name = models.CharField(max_length=200)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # SCEP and PKCS#12 identity
    template = models.ForeignKey(
        CertificateTemplate,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payloads",
        verbose_name="request template",
        help_text="SCEP: the request template the device enrolls with (key generated on the "
        "device; Apple: RSA 2048/4096). PKCS#12 identity: the template of the identity "
        "mdmcerts generates for each device (key generated on the server).",
    )
    # Trusted certificate
    ca = models.ForeignKey(
        CertificateAuthority,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name="CA server",
        help_text="Trusted certificate: this CA's certificate and every issuer above it. "
        "Single file identity: a CA server of that kind, whose one identity every device "
        "gets.",
    )
    # User-provided certificate
    user_identity_purpose = models.CharField(
        "user-provided certificate purpose",
        max_length=30,
        blank=True,
        choices=IdentityPurpose.choices,
        help_text="User-provided certificate: the device's owner's uploaded certificate for "
        "this purpose.",
    )
    # Identity of Wi-Fi, VPN and email payloads: a SCEP or PKCS#12 payload of the same profile.
    identity = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="identity certificate",
        help_text="Wi-Fi, VPN, email: an identity payload of this profile (SCEP, PKCS#12, "
        "user-provided or single file; save it first).",
    )
    # Wi-Fi
    ssid = models.CharField("SSID", max_length=32, blank=True, help_text="Wi-Fi: network name.")
    hidden_network = models.BooleanField(default=False, help_text="Wi-Fi: SSID not broadcast.")
    auto_join = models.BooleanField(default=True, help_text="Wi-Fi: join automatically.")
    wifi_security = models.CharField(
        max_length=20,
        choices=WifiSecurity.choices,
        blank=True,
        help_text="Wi-Fi: WPA2 or WPA3 Enterprise, with EAP-TLS.",
    )
    trusted_server_names = models.TextField(
        blank=True,
        help_text="Wi-Fi: RADIUS server certificate names, one per line (wildcards allowed).",
    )
    # VPN
    vpn_type = models.CharField(
        "VPN type",
        max_length=12,
        choices=VpnType.choices,
        blank=True,
        help_text="VPN: the protocol.",
    )
    server = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="VPN: server host name or address.",
    )
    remote_identifier = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="VPN (IKEv2): the server's identity; the server name when empty.",
    )
    account = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="VPN: account (IKEv2 local identifier, XAuth or AnyConnect user), e.g. $USERID$.",
    )
    # Exchange ActiveSync / email
    host = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="Email: Exchange ActiveSync host.",
    )
    use_ssl = models.BooleanField("use SSL", default=True, help_text="Email: connect over TLS.")
    email_address = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="Email: address, e.g. $EMAIL$.",
    )
    user_name = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_variables],
        help_text="Email: user name, e.g. $USER_UPN$; the device asks when empty.",
    )

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.display_name}"

    def _has(self, name: str) -> bool:
        field = self._meta.get_field(name)
        if field.is_relation:
            # An identity may be a payload saved in the same edit, after this one is checked.
            return getattr(self, field.attname) is not None or (
                field.get_cached_value(self, None) is not None
            )
        return bool(getattr(self, name))

    def clean(self) -> None:
        errors = {
            name: f"Required for {self.get_kind_display()} payloads."
            for name in REQUIRED_PAYLOAD_FIELDS.get(self.kind, [])
            if not self._has(name)
        }
        uses_identity = "identity" in PAYLOAD_FIELDS.get(self.kind, [])
        identity = self.identity if uses_identity and self._has("identity") else None
        if identity is not None and (
            identity.kind not in IDENTITY_PAYLOAD_KINDS
            or identity.profile_id != self.profile_id
            or identity is self
        ):
            errors["identity"] = (
                "The identity must be an identity payload (SCEP, PKCS#12, user-provided or "
                "single file) of the same profile."
            )
        template_error = self._template_error()
        if template_error:
            errors["template"] = template_error
        ca_error = self._ca_error()
        if ca_error:
            errors["ca"] = ca_error
        if errors:
            raise ValidationError(errors)

    def _template_error(self) -> str:
        """Where the key is generated decides the payload: the device enrolls its own key
        over SCEP; mdmcerts delivers the keys it generates as PKCS#12."""
        template = (
            self.template if self.kind in IDENTITY_PAYLOAD_KINDS and self.template_id else None
        )
        if template is None:
            return ""
        on_server = template.key_generation == KeyGeneration.SERVER
        if self.kind == PayloadKind.PKCS12 and not on_server:
            return (
                f"Template {template} has the device generate its key: use a SCEP payload, "
                "or a template whose key generation location is the server."
            )
        if self.kind == PayloadKind.SCEP and on_server:
            return (
                f"Template {template} generates keys on the server: use a PKCS#12 identity "
                "payload, or a template whose key generation location is the device."
            )
        if (
            self.kind == PayloadKind.SCEP
            and self._for_apple()
            and template.key_algorithm not in APPLE_SCEP_KEY_ALGORITHMS
        ):
            return (
                f"Apple devices enroll RSA 2048 or 4096 keys only; template {template} "
                f"uses {template.get_key_algorithm_display()}."
            )
        return ""

    def _ca_error(self) -> str:
        """A single file identity comes from a CA server of that kind; a trusted
        certificate from a CA (a single-file server holds an end-entity identity)."""
        ca = self.ca if self.ca_id and "ca" in PAYLOAD_FIELDS.get(self.kind, []) else None
        if ca is None:
            return ""
        single_file = ca.kind == CAKind.SINGLE_FILE
        if self.kind == PayloadKind.SINGLE_FILE and not single_file:
            return f"CA server {ca} is not a single file identity; choose one that is."
        if self.kind == PayloadKind.TRUSTED_CERTIFICATE and single_file:
            return (
                f"CA server {ca} holds a single file identity, not a CA to trust; use a "
                "single file identity payload for it."
            )
        return ""

    def _for_apple(self) -> bool:
        profile = self.profile if self._has("profile") else None
        return profile is not None and profile.platform == ProfilePlatform.APPLE

    def label(self) -> str:
        """How messages name the payload: its kind and display name."""
        kind = "PKCS#12" if self.kind == PayloadKind.PKCS12 else self.get_kind_display()
        return f"{kind} payload {self.display_name!r}"

    def summary(self) -> str:
        """The payload in one line, with the fields its kind uses: its audit trail."""
        values = []
        for name in PAYLOAD_FIELDS.get(self.kind, []):
            value = getattr(self, name)
            if isinstance(value, ProfilePayload):
                value = value.display_name
            values.append(f"{name}={value if value not in (None, '') else '—'}")
        return f"{self.get_kind_display()} '{self.display_name}': {', '.join(values)}"


class ProfileAssignment(models.Model):
    """A profile assigned to a device group or to one device."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="assignments")
    group = models.ForeignKey(
        DeviceGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.CASCADE, related_name="assignments"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(group__isnull=False, device__isnull=True)
                    | models.Q(group__isnull=True, device__isnull=False)
                ),
                name="assignment_to_group_or_device",
            ),
            models.UniqueConstraint(fields=["profile", "group"], name="assignment_unique_group"),
            models.UniqueConstraint(fields=["profile", "device"], name="assignment_unique_device"),
        ]

    def __str__(self) -> str:
        return f"{self.profile} → {self.target_label()}"

    def clean(self) -> None:
        if (self.group_id is None) == (self.device_id is None):
            raise ValidationError("Assign the profile to a group or to a device (one of them).")

    def target_label(self) -> str:
        if self.group_id:
            return f"group {self.group}"
        return f"device {self.device} (#{self.device_id})"


class Delivery(models.Model):
    """Where one profile stands on one device.

    The device needs the profile (again) while ``delivered_version`` lags the profile's
    version or ``delivered_generation`` lags ``generation`` (bumped by "redeliver" and by
    certificate renewal).
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="deliveries")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    delivered_version = models.PositiveIntegerField(null=True, blank=True)
    generation = models.PositiveIntegerField(default=1)
    delivered_generation = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    identities = models.ManyToManyField(
        "certificates.Identity",
        blank=True,
        related_name="deliveries",
        help_text="The server-generated identities its last rendering carried (PKCS#12 "
        "payloads); an install acknowledgement marks them delivered.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["device", "profile"], name="delivery_unique_device_profile"
            )
        ]
        indexes = [models.Index(fields=["device", "status"], name="delivery_device_status")]

    def __str__(self) -> str:
        return f"{self.profile} on {self.device}: {self.get_status_display()}"


class ProfileSigner(models.Model):
    """The profile-signing certificate of a local CA, and its key encrypted under the KEK.

    One per CA, made on first use and replaced in place when it nears expiry or the CA's
    certificate changed. Extended key usage is code signing only (see
    ``apps.profiles.signing``).
    """

    ca = models.OneToOneField(
        CertificateAuthority,
        on_delete=models.CASCADE,
        related_name="profile_signer",
        verbose_name="CA server",
    )
    certificate_pem = models.TextField("profile-signing certificate", editable=False)
    private_key = EncryptedSecretField()
    fingerprint_sha256 = models.CharField("SHA-256 fingerprint", max_length=64, editable=False)
    issuer_fingerprint_sha256 = models.CharField(
        "CA certificate SHA-256 fingerprint",
        max_length=64,
        editable=False,
        help_text="The CA certificate that signed it; a renewed CA gets a new signer.",
    )
    not_after = models.DateTimeField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "profile signer"

    def __str__(self) -> str:
        return f"profile signer of {self.ca}"

    @cached_property
    def certificate(self) -> x509.Certificate:
        return crypto.load_pem_certificate(self.certificate_pem)

    def set_identity(self, certificate: x509.Certificate, key: crypto.PrivateKey) -> None:
        """Store the certificate, its derived fields and (encrypted) its key."""
        self.certificate_pem = crypto.cert_pem(certificate)
        self.__dict__.pop("certificate", None)
        self.fingerprint_sha256 = crypto.fingerprint_sha256(certificate)
        self.issuer_fingerprint_sha256 = self.ca.fingerprint_sha256
        self.not_after = certificate.not_valid_after_utc
        self.private_key = secrets.encrypt(
            crypto.private_key_der(key), context=secret_context(type(self), "private_key")
        )

    def load_private_key(self) -> crypto.PrivateKey:
        """The signing key, for signing. Never store or log it."""
        return crypto.load_stored_key(
            self.private_key, context=secret_context(type(self), "private_key")
        )
