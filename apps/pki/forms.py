"""Console forms for CA servers: generate, import, change."""

from django import forms
from django.core.exceptions import ValidationError

from apps.certificates.uploads import (
    MAX_UPLOAD_BYTES,
    UploadRejected,
    check_not_recorded,
    validate_pkcs12,
)
from apps.pki import crypto
from apps.pki.choices import CAKind, KeyAlgorithm
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
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The PKCS#12 or key password. It is not stored.",
    )

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


class SingleFileIdentityField(forms.FileField):
    """A PKCS#12 upload, read only when it is small enough to be one identity."""

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if upload and upload.size > MAX_UPLOAD_BYTES:
            raise ValidationError(
                f"The file is {upload.size // 1024} KB; at most {MAX_UPLOAD_BYTES // 1024} KB "
                "is accepted."
            )
        return upload


class SingleFileCAForm(forms.ModelForm):
    """A CA server of kind single file: one PKCS#12 identity every assigned device gets."""

    identity_file = SingleFileIdentityField(
        label="Identity (PKCS#12)",
        help_text=".p12 or .pfx with one certificate, its private key and its issuers, at "
        "most 100 KB. The key is stored encrypted; it is never shown or downloadable.",
    )
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The PKCS#12 password. It is not stored.",
    )

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
