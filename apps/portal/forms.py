"""Portal forms. Validation of the PKCS#12 itself is the certificates app's
(``apps.certificates.uploads``); these only collect the input."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from apps.certificates.choices import IdentityPurpose
from apps.certificates.uploads import MAX_UPLOAD_BYTES, UploadRejected, check_upload_size
from apps.core.forms import secret_input


class SignInForm(AuthenticationForm):
    """Django's sign-in form, with messages that say what to do."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": (
            "That username and password do not match. Check both (the password is "
            "case-sensitive) and try again; after several failed attempts, sign-in is "
            "paused for a while."
        ),
        "inactive": "This account is disabled. Ask your IT administrator to enable it.",
    }


class UploadForm(forms.Form):
    """A personal PKCS#12 file, its password and what it is for."""

    purpose = forms.ChoiceField(
        choices=IdentityPurpose.choices,
        help_text="What the certificate is for: your devices receive it with the profiles "
        "that ask for this purpose.",
    )
    file = forms.FileField(
        label="PKCS#12 file (.p12 or .pfx)",
        help_text=f"Your certificate with its private key, at most {MAX_UPLOAD_BYTES // 1024} "
        "KB, as exported from your mail program, keychain or certificate store.",
        widget=forms.ClearableFileInput(attrs={"accept": ".p12,.pfx,application/x-pkcs12"}),
    )
    password = secret_input(
        label="Password of the file",
        help_text="The password you chose when you exported the file. It is used once to "
        "open the file and is not kept.",
        autocomplete="off",
    )

    def clean_file(self):
        # Refused before it is read: a PKCS#12 this large is not one person's certificate.
        upload = self.cleaned_data["file"]
        try:
            check_upload_size(upload.size)
        except UploadRejected as exc:
            raise forms.ValidationError(exc.message) from exc
        return upload

    def read_file(self) -> bytes:
        """The uploaded bytes (at most the size limit, checked in ``clean_file``)."""
        upload = self.cleaned_data["file"]
        upload.seek(0)
        return upload.read(MAX_UPLOAD_BYTES + 1)
