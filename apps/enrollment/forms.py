"""Console form for request templates."""

from django import forms
from django.core.exceptions import ValidationError

from apps.core.forms import secret_input
from apps.enrollment.choices import ChallengeType, ExtendedKeyUsage, SanType
from apps.enrollment.models import CertificateTemplate, validate_oid_list

KNOWN_EKUS = set(ExtendedKeyUsage.values)


class CertificateTemplateForm(forms.ModelForm):
    """Templates with a write-only challenge password and EKUs as checkboxes + custom OIDs."""

    static_challenge_input = secret_input(
        label="Enrollment challenge password",
        help_text="Write-only: never shown again. Leave empty to keep the current one.",
    )
    clear_static_challenge = forms.BooleanField(
        label="Remove the stored challenge password", required=False
    )
    eku_choices = forms.MultipleChoiceField(
        label="Extended key usages",
        choices=ExtendedKeyUsage.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    custom_ekus = forms.CharField(
        label="Custom EKU OIDs",
        required=False,
        help_text="Further extended key usage OIDs, separated by commas or spaces.",
    )
    allowed_request_san_types = forms.MultipleChoiceField(
        label="SAN types allowed from a request",
        choices=SanType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only with subject source \u201crequest\u201d: which SANs of the CSR are copied.",
    )

    class Meta:
        model = CertificateTemplate
        fields = [
            "name",
            "slug",
            "description",
            "ca",
            "subject",
            "subject_source",
            "allowed_request_san_types",
            "key_algorithm",
            "key_generation",
            "external_delivery",
            "key_usage_digital_signature",
            "key_usage_key_encipherment",
            "validity_days",
            "auto_renew",
            "renew_before_days",
            "revocation_enabled",
            "revocation_grace_hours",
            "challenge_type",
            "max_failed_attempts",
            "retry_interval_seconds",
            "approval_required",
            "allow_single_des",
        ]
        widgets = {"subject": forms.TextInput(attrs={"size": 80})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["external_delivery"].required = False
        ekus = self.instance.extended_key_usages or []
        self.initial.setdefault("eku_choices", [o for o in ekus if o in KNOWN_EKUS])
        self.initial.setdefault("custom_ekus", ", ".join(o for o in ekus if o not in KNOWN_EKUS))
        if self.instance.static_challenge:
            self.fields["static_challenge_input"].help_text = (
                "A password is stored (encrypted). Write-only: type a new one to replace it, "
                "or leave empty to keep it."
            )

    def clean_external_delivery(self) -> str:
        # Only meaningful for an external CA: left out of a form, it keeps what it was.
        return self.cleaned_data.get("external_delivery") or self.instance.external_delivery

    def clean(self) -> dict:
        data = super().clean()
        custom = [o for o in (data.get("custom_ekus") or "").replace(",", " ").split() if o]
        ekus = list(dict.fromkeys([*data.get("eku_choices", []), *custom]))
        try:
            validate_oid_list(ekus)
        except ValidationError as exc:
            self.add_error("custom_ekus", exc)
        self.instance.extended_key_usages = ekus
        new_challenge = data.get("static_challenge_input") or ""
        if new_challenge:
            self.instance.set_static_challenge(new_challenge)
        elif data.get("clear_static_challenge"):
            self.instance.set_static_challenge("")
        if data.get("challenge_type") != ChallengeType.STATIC and new_challenge:
            self.add_error(
                "static_challenge_input",
                "A challenge password is only used with the static challenge type.",
            )
        return data
