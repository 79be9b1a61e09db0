"""Console forms for CA servers: generate, import, change; external SCEP CAs."""

from cryptography import x509
from django import forms
from django.core.exceptions import ValidationError

from apps.certificates.uploads import (
    UploadRejected,
    check_not_recorded,
    check_upload_size,
    validate_pkcs12,
)
from apps.core.forms import secret_input
from apps.pki import crypto, external
from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.choices import CAKind, ExternalChallengeType, KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import MAX_IMPORT_BYTES, check_ca_import, check_can_sign_ca


class GenerateCAForm(forms.ModelForm):
    """A new local CA: a root, or an intermediate signed by another local CA."""

    subject_dn = forms.CharField(
        label="Subject",
        max_length=500,
        help_text="Most significant first, e.g. C=US,O=Zylker,CN=Zylker Issuing CA.",
    )
    key_algorithm = forms.ChoiceField(
        label="Key type and size", choices=KeyAlgorithm.choices, initial=KeyAlgorithm.EC_P256
    )
    validity_years = forms.IntegerField(min_value=1, max_value=30, initial=10)
    path_length = forms.IntegerField(
        min_value=0,
        max_value=10,
        required=False,
        help_text="How many CAs may stand below this one; empty for no limit.",
    )

    class Meta:
        model = CertificateAuthority
        fields = ["name", "slug", "description", "parent", "signature_hash"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = CertificateAuthority.objects.filter(kind=CAKind.LOCAL)
        self.fields["parent"].help_text = "Empty for a root CA; a local CA for an intermediate."

    def clean_subject_dn(self) -> str:
        value = self.cleaned_data["subject_dn"]
        try:
            crypto.build_name(crypto.parse_name_pattern(value))
        except crypto.NameSyntaxError as exc:
            raise ValidationError(f"{exc}.") from exc
        return value

    def clean(self) -> dict:
        data = super().clean()
        if data.get("parent") is not None:
            try:
                check_can_sign_ca(data["parent"], data.get("path_length"))
            except ValidationError as exc:
                raise ValidationError(exc.message_dict.get("parent") or exc.messages) from exc
        return data


class ImportCAForm(forms.ModelForm):
    """An existing CA, with its key, from PKCS#12 or PEM."""

    identity_file = forms.FileField(
        label="CA certificate and key",
        help_text="PKCS#12 (.p12/.pfx), or PEM with the certificate (and the key, or give "
        "the key below). Certificates of the issuers above may follow.",
    )
    key_file = forms.FileField(
        label="Private key (PEM)",
        required=False,
        help_text="Only when the key is in a separate PEM file.",
    )
    password = secret_input(help_text="The PKCS#12 or key password. It is not stored.")

    class Meta:
        model = CertificateAuthority
        fields = ["name", "slug", "description", "signature_hash"]

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("identity_file")
        if upload is None:
            return data
        key_upload = data.get("key_file")
        for f in (upload, key_upload):
            if f is not None and f.size > MAX_IMPORT_BYTES:
                raise ValidationError("The file is too large for a CA identity.")
        data["identity_bytes"] = upload.read()
        data["key_bytes"] = key_upload.read() if key_upload else b""
        check_ca_import(
            data=data["identity_bytes"],
            password=data.get("password") or "",
            key_data=data["key_bytes"],
        )
        return data


class ChangeCAForm(forms.ModelForm):
    class Meta:
        model = CertificateAuthority
        fields = ["name", "description", "signature_hash", "successor"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["successor"].queryset = CertificateAuthority.objects.filter(
            kind=CAKind.LOCAL
        ).exclude(pk=self.instance.pk)


KEPT_WHEN_EMPTY = "Write-only. Empty keeps the stored one."
EXTERNAL_FIELDS = [
    "name",
    "description",
    "scep_url",
    "scep_challenge_type",
    "ndes_challenge_url",
    "ndes_username",
    "ndes_challenge_length",
    "scep_retry_seconds",
    "scep_max_pending_retries",
    "scep_request_timeout_seconds",
    "scep_allow_single_des",
    "tls_trust_bundle_pem",
]


class ExternalCAForm(forms.ModelForm):
    """An external SCEP CA server. Its CA certificate is fetched with GetCACert when saved
    (or uploaded) and pinned; secrets are write-only: empty keeps the stored one."""

    ca_certificate_file = forms.FileField(
        label="CA certificate (PEM)",
        required=False,
        help_text="Optional: the CA certificate (and the certificates above it) to pin "
        "instead of what GetCACert returns.",
    )
    refetch_ca_certificate = forms.BooleanField(
        label="Fetch the CA certificate again",
        required=False,
        help_text="Pin what GetCACert returns now (after the CA renewed its certificate).",
    )
    expected_fingerprint = forms.CharField(
        label="Expected SHA-256 fingerprint",
        required=False,
        help_text="Optional: saving fails unless the CA certificate has this fingerprint.",
    )
    scep_url = forms.URLField(
        label="SCEP URL",
        max_length=500,
        assume_scheme="https",
        help_text=CertificateAuthority._meta.get_field("scep_url").help_text,
    )
    ndes_challenge_url = forms.URLField(
        label="SCEP challenge URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text=CertificateAuthority._meta.get_field("ndes_challenge_url").help_text,
    )
    static_challenge = secret_input(label="Static challenge", help_text=KEPT_WHEN_EMPTY)
    ndes_password = secret_input(
        label="Challenge password (NDES account)", help_text=KEPT_WHEN_EMPTY
    )

    class Meta:
        model = CertificateAuthority
        fields = ["slug", *EXTERNAL_FIELDS]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.certificates: list[x509.Certificate] | None = None
        if self.instance.pk is not None:
            self.fields.pop("slug", None)
        else:
            self.fields.pop("refetch_ca_certificate")

    def clean_tls_trust_bundle_pem(self) -> str:
        value = self.cleaned_data["tls_trust_bundle_pem"]
        if value.strip():
            try:
                external.load_pem_certificates(value.encode())
            except ValueError as exc:
                raise ValidationError(f"TLS trust bundle: {exc}") from exc
        return value

    def clean_expected_fingerprint(self) -> str:
        value = self.cleaned_data["expected_fingerprint"]
        try:
            return external.normalize_fingerprint(value) if value.strip() else ""
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean(self) -> dict:
        data = super().clean()
        self._check_challenge(data)
        if not self.errors:
            self._check_ca_certificate(data)
        return data

    def _check_challenge(self, data: dict) -> None:
        kind, stored = data.get("scep_challenge_type"), self.instance
        if kind == ExternalChallengeType.STATIC and not (
            data.get("static_challenge") or stored.scep_static_challenge
        ):
            self.add_error("static_challenge", "A static challenge type needs the challenge.")
        if kind == ExternalChallengeType.DYNAMIC:
            for name in ("ndes_challenge_url", "ndes_username"):
                if not data.get(name):
                    self.add_error(name, "Needed to fetch dynamic challenges from NDES.")
            if not (data.get("ndes_password") or stored.ndes_password):
                self.add_error("ndes_password", "Needed to fetch dynamic challenges from NDES.")

    def _check_ca_certificate(self, data: dict) -> None:
        """Read the uploaded certificate, or fetch GetCACert (new CA, or when asked)."""
        upload = data.get("ca_certificate_file")
        try:
            if upload is not None:
                if upload.size > MAX_IMPORT_BYTES:
                    raise ValueError("The file is too large for CA certificates.")
                self.certificates = external.load_pem_certificates(upload.read())
            elif self.instance.pk is None or data.get("refetch_ca_certificate"):
                self.certificates = self._fetch(data)
        except (ValueError, UpstreamError) as exc:
            field = "ca_certificate_file" if upload is not None else None
            self.add_error(field, f"CA certificate: {exc}")
            return
        self._check_fingerprint(data.get("expected_fingerprint", ""))

    def _fetch(self, data: dict) -> list[x509.Certificate]:
        probe = CertificateAuthority(
            name=data.get("name") or "new CA server",
            scep_url=data.get("scep_url") or "",
            scep_request_timeout_seconds=data.get("scep_request_timeout_seconds") or 15,
            tls_trust_bundle_pem=data.get("tls_trust_bundle_pem") or "",
        )
        return upstream_for(probe).fetch_ca_certificates()

    def _check_fingerprint(self, expected: str) -> None:
        if not expected:
            return
        if self.certificates is None:
            self.certificates = [self.instance.certificate]
        try:
            external.pin(CertificateAuthority(), self.certificates, expected=expected)
        except external.FingerprintMismatch as exc:
            self.add_error("expected_fingerprint", str(exc))

    def apply(self, ca: CertificateAuthority) -> None:
        """Write the form's secrets and the certificate it read onto ``ca`` (not saved)."""
        for form_field, model_field in SECRET_FIELDS:
            value = self.cleaned_data.get(form_field)
            if value:
                ca.set_secret(model_field, value)
        if self.certificates is not None:
            external.pin(ca, self.certificates)


SECRET_FIELDS = (("static_challenge", "scep_static_challenge"), ("ndes_password", "ndes_password"))


class SingleFileIdentityField(forms.FileField):
    """A PKCS#12 upload, read only when it is small enough to be one identity."""

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if upload:
            try:
                check_upload_size(upload.size)
            except UploadRejected as exc:
                raise ValidationError(exc.message) from exc
        return upload


class SingleFileCAForm(forms.ModelForm):
    """A CA server of kind single file: one PKCS#12 identity every assigned device gets."""

    identity_file = SingleFileIdentityField(
        label="Identity (PKCS#12)",
        help_text=".p12 or .pfx with one certificate, its private key and its issuers, at "
        "most 100 KB. The key is stored encrypted; it is never shown or downloadable.",
    )
    password = secret_input(help_text="The PKCS#12 password. It is not stored.")

    class Meta:
        model = CertificateAuthority
        fields = ["name", "slug", "description"]

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("identity_file")
        if upload is not None:
            data["identity_bytes"] = upload.read()
            try:
                bundle = validate_pkcs12(
                    data=data["identity_bytes"], password=data.get("password") or ""
                )
                check_not_recorded(bundle.certificate)
            except UploadRejected as exc:
                raise ValidationError({"identity_file": exc.message}) from exc
        return data


class ChangeSingleFileCAForm(SingleFileCAForm):
    """Rename a single-file CA server, or replace its identity with a renewed file."""

    class Meta:
        model = CertificateAuthority
        fields = ["name", "description"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["identity_file"].required = False
        self.fields["identity_file"].label = "Replace the identity (PKCS#12)"
        self.fields["identity_file"].help_text = (
            "Optional: a renewed .p12 or .pfx. Every device that got the identity gets the "
            "new one at its next check-in."
        )
