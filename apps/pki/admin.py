"""CA servers in the console."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from apps.audit.admin import AuditedAdminMixin
from apps.certificates.single_file import store_single_file_identity
from apps.pki import crypto, external
from apps.pki.choices import CAKind
from apps.pki.forms import (
    ChangeCAForm,
    ChangeSingleFileCAForm,
    ExternalCAForm,
    GenerateCAForm,
    ImportCAForm,
    SingleFileCAForm,
)
from apps.pki.models import CertificateAuthority, CertificateRevocationList
from apps.pki.services import generate_local_ca, import_ca

GENERATE_FIELDSETS = [
    (None, {"fields": ["name", "slug", "description"]}),
    (
        "Certificate",
        {
            "fields": [
                "parent",
                "subject_dn",
                "key_algorithm",
                "signature_hash",
                "validity_years",
                "path_length",
            ]
        },
    ),
]
IMPORT_FIELDSETS = [
    (None, {"fields": ["name", "slug", "description"]}),
    ("Identity", {"fields": ["identity_file", "key_file", "password", "signature_hash"]}),
]
SINGLE_FILE_FIELDSETS = [
    (None, {"fields": ["name", "slug", "description"]}),
    (
        "Identity",
        {
            "fields": ["identity_file", "password"],
            "description": "One identity delivered to every device a profile with a single "
            "file identity payload of this CA server targets.",
        },
    ),
]
ADD_TITLES = {
    "import": "Import a CA",
    "external": "Add an external SCEP CA",
    "single_file": "Add a single file identity",
    "generate": "Generate a CA",
}


SINGLE_FILE_CERTIFICATE_FIELDS = [
    "subject",
    "serial",
    "fingerprint",
    "not_before",
    "not_after",
    "key_algorithm",
    "key_stored",
    "downloads",
    "certificate_pem",
]

EXTERNAL_SETTINGS = [
    (None, {"fields": ["name", "slug", "description"]}),
    ("SCEP server", {"fields": ["scep_url", "tls_trust_bundle_pem", "scep_allow_single_des"]}),
    (
        "CA certificate",
        {"fields": ["ca_certificate_file", "expected_fingerprint"]},
    ),
    (
        "Challenge",
        {
            "fields": [
                "scep_challenge_type",
                "static_challenge",
                "ndes_challenge_url",
                "ndes_username",
                "ndes_password",
                "ndes_challenge_length",
            ]
        },
    ),
    (
        "Advanced options",
        {
            "fields": [
                "scep_retry_seconds",
                "scep_max_pending_retries",
                "scep_request_timeout_seconds",
            ]
        },
    ),
]
EXTERNAL_READONLY = [
    "kind",
    "subject",
    "fingerprint",
    "not_before",
    "not_after",
    "pinned_chain",
    "static_challenge_status",
    "ndes_password_status",
    "downloads",
]


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """CA servers: generate or import local CAs, download their certificates."""

    list_display = ["name", "kind", "subject", "short_fingerprint", "validity", "downloads"]
    list_filter = ["kind"]
    search_fields = ["name", "slug", "subject", "fingerprint_sha256"]
    list_select_related = ["parent"]
    prepopulated_fields = {"slug": ["name"]}
    change_list_template = "admin/pki/certificateauthority/change_list.html"
    certificate_fields = [
        "subject",
        "parent",
        "serial",
        "fingerprint",
        "not_before",
        "not_after",
        "key_algorithm",
        "path_length",
        "key_stored",
        "downloads",
        "certificate_pem",
    ]
    readonly_fields = ["kind", *certificate_fields, "scep_ra", "crl_status", "ocsp_signer"]

    change_form_template = "admin/pki/certificateauthority/change_form.html"
    actions = ["test_connection"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if self._is_external(request, obj):
            kwargs["form"] = ExternalCAForm
        elif obj is not None and obj.kind == CAKind.SINGLE_FILE:
            kwargs["form"] = ChangeSingleFileCAForm
        elif obj is not None:
            kwargs["form"] = ChangeCAForm
        elif self._mode(request) == "import":
            kwargs["form"] = ImportCAForm
        elif self._mode(request) == "single_file":
            kwargs["form"] = SingleFileCAForm
        else:
            kwargs["form"] = GenerateCAForm
        kwargs["fields"] = None
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if self._is_external(request, obj):
            return self._external_fieldsets(obj)
        if obj is None:
            return {"import": IMPORT_FIELDSETS, "single_file": SINGLE_FILE_FIELDSETS}.get(
                self._mode(request), GENERATE_FIELDSETS
            )
        if obj.kind == CAKind.SINGLE_FILE:
            return [
                (None, {"fields": ["name", "description", "kind"]}),
                (
                    "Identity",
                    {"fields": [*SINGLE_FILE_CERTIFICATE_FIELDS, "identity_file", "password"]},
                ),
            ]
        return [
            (None, {"fields": ["name", "description", "kind", "signature_hash", "successor"]}),
            ("Certificate", {"fields": self.certificate_fields}),
            ("SCEP", {"fields": ["scep_ra"]}),
            ("Revocation status", {"fields": ["crl_status", "ocsp_signer"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.kind == CAKind.SCEP:
            return EXTERNAL_READONLY
        if obj is not None and obj.kind == CAKind.SINGLE_FILE:
            return ["kind", *SINGLE_FILE_CERTIFICATE_FIELDS]
        return self.readonly_fields if obj is not None else []

    def _is_external(self, request, obj) -> bool:
        return obj.kind == CAKind.SCEP if obj is not None else self._mode(request) == "external"

    @staticmethod
    def _external_fieldsets(obj):
        if obj is None:
            return EXTERNAL_SETTINGS
        fieldsets = [(title, {"fields": list(o["fields"])}) for title, o in EXTERNAL_SETTINGS]
        fieldsets[0][1]["fields"] = ["name", "description", "kind"]
        fieldsets[2][1]["fields"] = [
            "subject",
            "fingerprint",
            "not_before",
            "not_after",
            "pinned_chain",
            "downloads",
            "ca_certificate_file",
            "refetch_ca_certificate",
            "expected_fingerprint",
        ]
        challenge = fieldsets[3][1]["fields"]
        challenge.insert(challenge.index("static_challenge"), "static_challenge_status")
        challenge.insert(challenge.index("ndes_password"), "ndes_password_status")
        return fieldsets

    def get_prepopulated_fields(self, request, obj=None):
        return self.prepopulated_fields if obj is None else {}

    def add_view(self, request, form_url="", extra_context=None):
        title = ADD_TITLES.get(self._mode(request), ADD_TITLES["generate"])
        return super().add_view(request, form_url, {"title": title, **(extra_context or {})})

    @staticmethod
    def _mode(request) -> str:
        return request.GET.get("mode") or request.POST.get("mode") or "generate"

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        if isinstance(form, ExternalCAForm):
            form.apply(obj)
            if not change:
                obj.kind = CAKind.SCEP
                external.save_external_ca(obj, before=None, request=request)
                return None
        if isinstance(form, SingleFileCAForm):
            if change:
                super().save_model(request, obj, form, change)
            if not change or data.get("identity_bytes"):
                store_single_file_identity(
                    ca=obj,
                    data=data["identity_bytes"],
                    password=data.get("password") or "",
                    actor=request.user,
                    request=request,
                )
            return None
        if change:
            return super().save_model(request, obj, form, change)
        if isinstance(form, ImportCAForm):
            import_ca(
                ca=obj,
                data=data["identity_bytes"],
                password=data.get("password") or "",
                key_data=data["key_bytes"],
                request=request,
            )
        else:
            generate_local_ca(
                ca=obj,
                subject=data["subject_dn"],
                key_algorithm=data["key_algorithm"],
                signature_hash=data["signature_hash"],
                validity_years=data["validity_years"],
                parent=data.get("parent"),
                path_length=data.get("path_length"),
                request=request,
            )

    def save_related(self, request, form, formsets, change) -> None:
        # A new CA's creation was audited by the service that made it.
        if change:
            super().save_related(request, form, formsets, change)

    def get_urls(self):
        return [
            path(
                "<int:pk>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="pki_certificateauthority_test_connection",
            ),
            path(
                "<int:pk>/download/<str:encoding>/",
                self.admin_site.admin_view(self.download),
                name="pki_certificateauthority_download",
            ),
            *super().get_urls(),
        ]

    def download(self, request, pk: int, encoding: str) -> HttpResponse:
        """The CA certificate as PEM, DER, or the PEM chain up to the root."""
        ca = get_object_or_404(CertificateAuthority, pk=pk)
        if not self.has_view_permission(request, ca):
            raise PermissionDenied
        if encoding == "der":
            body, ctype, ext = (
                ca.certificate.public_bytes(serialization.Encoding.DER),
                "application/pkix-cert",
                "cer",
            )
        elif encoding == "pem":
            body, ctype, ext = ca.certificate_pem, "application/x-pem-file", "pem"
        elif encoding == "chain":
            body, ctype, ext = ca.chain_pem_bundle(), "application/x-pem-file", "chain.pem"
        else:
            raise PermissionDenied
        response = HttpResponse(body, content_type=ctype)
        response["Content-Disposition"] = f'attachment; filename="{ca.slug}.{ext}"'
        return response

    @admin.action(description="Test connection (GetCACaps, GetCACert)")
    def test_connection(self, request, queryset):
        """Reach each selected external CA now and show what it answered."""
        return self._connection_page(request, queryset.filter(kind=CAKind.SCEP))

    def test_connection_view(self, request, pk: int) -> TemplateResponse:
        ca = get_object_or_404(CertificateAuthority, pk=pk, kind=CAKind.SCEP)
        if not self.has_view_permission(request, ca):
            raise PermissionDenied
        return self._connection_page(request, [ca])

    def _connection_page(self, request, cas) -> TemplateResponse:
        reports = [external.check_connection(ca=ca) for ca in cas]
        context = {
            **self.admin_site.each_context(request),
            "title": "Test connection",
            "opts": self.model._meta,
            "reports": reports,
        }
        return TemplateResponse(
            request, "admin/pki/certificateauthority/test_connection.html", context
        )

    @admin.display(description="certificates GetCACert returned")
    def pinned_chain(self, ca: CertificateAuthority) -> str:
        lines = [f"{ca.subject} (pinned)"]
        if ca.chain_pem:
            for cert in x509.load_pem_x509_certificates(ca.chain_pem.encode()):
                fingerprint = crypto.colon_hex(crypto.fingerprint_sha256(cert))
                lines.append(f"{crypto.format_name(cert.subject)}, SHA-256 {fingerprint}")
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines))

    @admin.display(description="static challenge")
    def static_challenge_status(self, ca: CertificateAuthority) -> str:
        return "set" if ca.scep_static_challenge else "not set"

    @admin.display(description="NDES password")
    def ndes_password_status(self, ca: CertificateAuthority) -> str:
        return "set" if ca.ndes_password else "not set"

    @admin.display(description="validity", ordering="not_after")
    def validity(self, ca: CertificateAuthority) -> str:
        return f"{ca.not_before:%Y-%m-%d} → {ca.not_after:%Y-%m-%d}"

    @admin.display(description="SHA-256 fingerprint", ordering="fingerprint_sha256")
    def short_fingerprint(self, ca: CertificateAuthority) -> str:
        return crypto.colon_hex(ca.fingerprint_sha256[:16]) + "…"

    @admin.display(description="SHA-256 fingerprint")
    def fingerprint(self, ca: CertificateAuthority) -> str:
        return crypto.colon_hex(ca.fingerprint_sha256)

    @admin.display(description="SCEP RA certificate")
    def scep_ra(self, ca: CertificateAuthority) -> str:
        ra = ca.ra_certificate
        if ra is None:
            return "made at the first SCEP request"
        return (
            f"{crypto.format_name(ra.subject)}, valid until {ra.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 {crypto.colon_hex(crypto.fingerprint_sha256(ra))}"
        )

    @admin.display(description="published CRL")
    def crl_status(self, ca: CertificateAuthority) -> str:
        crl = CertificateRevocationList.objects.filter(ca=ca).first()
        if crl is None:
            return f"published at the first revocation or fetch of {ca.public_url('crl')}"
        return (
            f"number {crl.number}, {crl.revoked_count} revoked, "
            f"this update {crl.this_update:%Y-%m-%d %H:%M}, "
            f"next update {crl.next_update:%Y-%m-%d %H:%M} UTC"
        )

    @admin.display(description="OCSP signing certificate")
    def ocsp_signer(self, ca: CertificateAuthority) -> str:
        signer = ca.ocsp_certificate
        if signer is None:
            return f"made at the first request to {ca.public_url('ocsp')}"
        return (
            f"{crypto.format_name(signer.subject)}, valid until "
            f"{signer.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 {crypto.colon_hex(crypto.fingerprint_sha256(signer))}"
        )

    @admin.display(description="private key", boolean=False)
    def key_stored(self, ca: CertificateAuthority) -> str:
        if ca.kind == CAKind.SINGLE_FILE:
            return "the identity's key, stored encrypted under the KEK (never shown)"
        return "stored encrypted under the KEK" if ca.has_private_key else "not held by mdmcerts"

    @admin.display(description="download")
    def downloads(self, ca: CertificateAuthority):
        def url(encoding: str) -> str:
            return reverse("admin:pki_certificateauthority_download", args=[ca.pk, encoding])

        return format_html(
            '<a href="{}">PEM</a> · <a href="{}">DER</a> · <a href="{}">chain</a>',
            url("pem"),
            url("der"),
            url("chain"),
        )
