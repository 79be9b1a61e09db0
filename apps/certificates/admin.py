"""The certificate inventory in the console."""

import io
import re
import zipfile

from cryptography.hazmat.primitives import serialization
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.audit.admin import AuditedAdminMixin
from apps.certificates import identities_admin  # noqa: F401 (registers the Identity admin)
from apps.certificates.choices import CertificateStatus
from apps.certificates.models import (
    Certificate,
    CertificateRequest,
    CertificateToRevokeAtCA,
    Identity,
    LifecycleSettings,
)
from apps.certificates.services import (
    GRACE_STATUSES,
    AlreadyRevoked,
    IssuanceRefused,
    RequestNotPending,
    approve_request,
    mark_revoked_at_ca,
    reject_request,
    renewals_due,
    revoke_certificate,
)
from apps.pki.choices import RevocationReason
from apps.profiles.models import Delivery
from apps.scep.services import renewal_opens

HEX_TERM = re.compile(r"^[0-9A-Fa-f:]{8,}$")


class ExpiresWithinFilter(admin.SimpleListFilter):
    title = "expires within"
    parameter_name = "expires_within"

    def lookups(self, request, model_admin):
        return [("7", "7 days"), ("30", "30 days"), ("90", "90 days")]

    def queryset(self, request, queryset):
        if self.value() in {"7", "30", "90"}:
            return queryset.expiring_within(int(self.value()))
        return queryset


class RenewalFilter(admin.SimpleListFilter):
    title = "renewal"
    parameter_name = "renewal"

    def lookups(self, request, model_admin):
        return [
            ("due", "Due, not re-triggered yet"),
            ("triggered", "Re-triggered, not renewed yet"),
            ("renewed", "Renewed"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "due":
            return queryset.filter(pk__in=renewals_due(timezone.now()).values("pk"))
        if self.value() == "triggered":
            return queryset.filter(renewal_triggered_at__isnull=False, replaced_by__isnull=True)
        if self.value() == "renewed":
            return queryset.filter(replaced_by__isnull=False)
        return queryset


class RevocationDueFilter(admin.SimpleListFilter):
    title = "revocation due"
    parameter_name = "revocation_due"

    def lookups(self, request, model_admin):
        return [("past", "Grace period over"), ("24", "Within 24 hours"), ("any", "Any time")]

    def queryset(self, request, queryset):
        waiting = queryset.filter(status__in=GRACE_STATUSES, revoke_after__isnull=False)
        if self.value() == "past":
            return waiting.filter(revoke_after__lte=timezone.now())
        if self.value() == "24":
            return waiting.filter(revoke_after__lte=timezone.now() + timezone.timedelta(hours=24))
        if self.value() == "any":
            return waiting
        return queryset


class RevokeAtCAFilter(admin.SimpleListFilter):
    title = "revocation at the CA"
    parameter_name = "revoke_at_ca"

    def lookups(self, request, model_admin):
        return [("todo", "To do"), ("done", "Done")]

    def queryset(self, request, queryset):
        if self.value() == "todo":
            return queryset.filter(
                revoke_at_ca_requested_at__isnull=False, revoke_at_ca_done_at__isnull=True
            )
        if self.value() == "done":
            return queryset.filter(revoke_at_ca_done_at__isnull=False)
        return queryset


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        choices=RevocationReason.choices,
        initial=RevocationReason.UNSPECIFIED,
        help_text="The RFC 5280 reason published for these certificates.",
    )


class CertificateRecordsMixin:
    """Certificates as records, never added or deleted from the console, searched by
    serial or fingerprint as tools print them, downloaded as PEM."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        # Serials and fingerprints are stored as plain lowercase hex; accept them as
        # tools print them (colons, upper case).
        if HEX_TERM.match(search_term.strip()):
            search_term = search_term.replace(":", "").strip().lower()
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="serial number", ordering="serial")
    def serial_hex(self, cert: Certificate) -> str:
        return cert.serial_colon_hex

    @admin.action(description="Download selected as PEM")
    def download_pem(self, request, queryset):
        return _certificates_response(queryset, "pem")


@admin.register(Certificate)
class CertificateAdmin(AuditedAdminMixin, CertificateRecordsMixin, admin.ModelAdmin):
    """Every certificate mdmcerts issued: searched, filtered, revoked, downloaded.

    Rows are records: they are never added or deleted from the console.
    """

    list_display = [
        "subject",
        "short_serial",
        "status",
        "ca",
        "template",
        "not_after",
        "source",
        "user",
        "lifecycle",
    ]
    list_filter = [
        "status",
        ExpiresWithinFilter,
        RenewalFilter,
        RevocationDueFilter,
        RevokeAtCAFilter,
        "pending_revocation_cause",
        "ca",
        "template",
        "source",
    ]
    search_fields = ["serial", "subject", "subject_alt_names", "fingerprint_sha256"]
    list_select_related = ["ca", "template", "user"]
    raw_id_fields = ["user"]
    show_full_result_count = False
    date_hierarchy = "not_after"
    actions = ["revoke_selected", "download_pem", "download_der"]
    certificate_fields = [
        "subject",
        "subject_alt_names",
        "serial_hex",
        "fingerprint",
        "ca",
        "template",
        "status",
        "revoked_at",
        "revocation_reason",
        "not_before",
        "not_after",
        "source",
        "user",
        "device",
        "profile",
        "identity_held",
        "delivered_to",
        "created_at",
        "downloads",
        "certificate_pem",
    ]
    lifecycle_fields = [
        "renewal_due_at",
        "renewal_triggered_at",
        "renewed_by",
        "renews",
        "pending_revocation_cause",
        "pending_revocation_since",
        "revoke_after",
        "removed_at",
        "revoke_at_ca_requested_at",
        "revoke_at_ca_done_at",
    ]
    fieldsets = [
        (None, {"fields": certificate_fields}),
        ("Lifecycle (renewal and revocation)", {"fields": lifecycle_fields}),
    ]
    readonly_fields = [*certificate_fields, *lifecycle_fields]

    @admin.display(description="key held by mdmcerts")
    def identity_held(self, cert: Certificate) -> str:
        identity = Identity.objects.filter(certificate=cert).first()
        if identity is None:
            return "no (the device holds its key)"
        purpose = f" for {identity.get_purpose_display()}" if identity.purpose else ""
        if not identity.current:
            return f"no longer{purpose}: the key was deleted or replaced"
        return f"yes{purpose}, encrypted under the KEK (never shown)"

    @admin.display(description="delivered to")
    def delivered_to(self, cert: Certificate):
        """The devices whose last delivery of a profile carried this identity."""
        deliveries = (
            Delivery.objects.filter(identities__certificate=cert)
            .select_related("device", "profile")
            .order_by("device__name", "pk")
        )
        if not deliveries:
            return "—"
        return format_html_join(
            mark_safe("<br>"),
            '<a href="{}">{}</a>: {} ({})',
            (
                (
                    reverse("admin:devices_device_change", args=[d.device_id]),
                    d.device,
                    d.profile,
                    d.get_status_display(),
                )
                for d in deliveries
            ),
        )

    @admin.display(description="lifecycle")
    def lifecycle(self, cert: Certificate) -> str:
        if cert.awaits_revocation_at_ca:
            return f"to revoke at the CA (since {cert.revoke_at_ca_requested_at:%Y-%m-%d %H:%M})"
        if cert.status in GRACE_STATUSES and cert.revoke_after is not None:
            return f"revocation due {cert.revoke_after:%Y-%m-%d %H:%M}"
        if cert.renewal_triggered_at is not None and cert.status == CertificateStatus.ACTIVE:
            return f"renewal re-triggered {cert.renewal_triggered_at:%Y-%m-%d %H:%M}"
        return ""

    @admin.display(description="renewal due at")
    def renewal_due_at(self, cert: Certificate):
        if cert.template is None or not cert.template.auto_renew:
            return "no automatic renewal"
        return renewal_opens(cert, cert.template)

    @admin.display(description="renewed by")
    def renewed_by(self, cert: Certificate):
        successor = Certificate.objects.filter(replaces=cert).first()
        return _certificate_link(successor)

    @admin.display(description="renews")
    def renews(self, cert: Certificate):
        return _certificate_link(cert.replaces)

    @admin.display(description="serial", ordering="serial")
    def short_serial(self, cert: Certificate) -> str:
        return cert.serial[:16] + ("…" if len(cert.serial) > 16 else "")

    @admin.display(description="SHA-256 fingerprint")
    def fingerprint(self, cert: Certificate) -> str:
        return cert.fingerprint_sha256

    @admin.display(description="download")
    def downloads(self, cert: Certificate):
        links = [
            (reverse("admin:certificates_certificate_download", args=[cert.pk, enc]), label)
            for enc, label in (("pem", "PEM"), ("der", "DER"))
        ]
        revoke = ""
        if cert.status != CertificateStatus.REVOKED:
            revoke = format_html(
                ' · <a href="{}">Revoke…</a>',
                reverse("admin:certificates_certificate_revoke", args=[cert.pk]),
            )
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>{}', *links[0], *links[1], revoke
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/download/<str:encoding>/",
                self.admin_site.admin_view(self.download),
                name="certificates_certificate_download",
            ),
            path(
                "<int:pk>/revoke/",
                self.admin_site.admin_view(self.revoke_one),
                name="certificates_certificate_revoke",
            ),
            *super().get_urls(),
        ]

    def download(self, request, pk: int, encoding: str) -> HttpResponse:
        cert = get_object_or_404(Certificate, pk=pk)
        if not self.has_view_permission(request, cert) or encoding not in {"pem", "der"}:
            raise PermissionDenied
        return _certificates_response(Certificate.objects.filter(pk=pk), encoding)

    def revoke_one(self, request, pk: int):
        cert = get_object_or_404(Certificate, pk=pk)
        return self._revoke(request, Certificate.objects.filter(pk=cert.pk), single=True)

    @admin.action(description="Revoke selected certificates…", permissions=["change"])
    def revoke_selected(self, request, queryset):
        return self._revoke(request, queryset)

    def _revoke(self, request, queryset, single: bool = False):
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = RevokeForm(request.POST if "reason" in request.POST else None)
        if form.is_valid():
            done = at_ca = 0
            for cert in queryset:
                try:
                    row = revoke_certificate(
                        certificate=cert, reason=form.cleaned_data["reason"], request=request
                    )
                    done += 1
                    at_ca += row.awaits_revocation_at_ca
                except AlreadyRevoked as exc:
                    self.message_user(request, str(exc), messages.WARNING)
            self.message_user(request, f"{done} certificate(s) revoked.", messages.SUCCESS)
            if at_ca:
                self.message_user(request, _revoke_at_ca_notice(at_ca), messages.WARNING)
            return None if not single else _redirect_to(queryset.first())
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke certificates",
            "opts": self.model._meta,
            "form": form,
            "certificates": queryset.select_related("ca"),
            "single": single,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/certificates/revoke.html", context)

    @admin.action(description="Download selected as DER")
    def download_der(self, request, queryset):
        return _certificates_response(queryset, "der")


@admin.register(CertificateToRevokeAtCA)
class CertificateToRevokeAtCAAdmin(CertificateRecordsMixin, admin.ModelAdmin):
    """The "revoke at the CA" list: certificates of external SCEP CAs that mdmcerts revoked
    (a revocation sweep or an administrator) and SCEP cannot revoke at the CA. An
    administrator revokes each at its CA (by serial number), then marks it done here."""

    list_display = [
        "subject",
        "serial_hex",
        "ca",
        "template",
        "device",
        "revocation_reason",
        "revoke_at_ca_requested_at",
        "revoke_at_ca_done_at",
    ]
    list_filter = [RevokeAtCAFilter, "ca", "template", "revocation_reason"]
    search_fields = ["serial", "subject", "fingerprint_sha256", "device__name"]
    list_select_related = ["ca", "template", "device"]
    show_full_result_count = False
    ordering = [F("revoke_at_ca_done_at").desc(nulls_first=True), "revoke_at_ca_requested_at"]
    actions = ["mark_revoked_at_ca", "download_pem"]
    fields = [
        "subject",
        "serial_hex",
        "fingerprint_sha256",
        "ca",
        "template",
        "device",
        "profile",
        "not_after",
        "revoked_at",
        "revocation_reason",
        "revoke_at_ca_requested_at",
        "revoke_at_ca_done_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(revoke_at_ca_requested_at__isnull=False)

    @admin.action(description="Mark selected as revoked at the CA", permissions=["change"])
    def mark_revoked_at_ca(self, request, queryset) -> None:
        count = mark_revoked_at_ca(certificates=queryset, request=request)
        skipped = queryset.count() - count
        self.message_user(request, f"{count} certificate(s) marked revoked at the CA.")
        if skipped:
            self.message_user(
                request, f"{skipped} were marked revoked at the CA already.", messages.WARNING
            )


def _revoke_at_ca_notice(count: int):
    url = reverse("admin:certificates_certificatetorevokeatca_changelist") + "?revoke_at_ca=todo"
    return format_html(
        "{} of them come from an external SCEP CA, which SCEP cannot ask to revoke: revoke "
        'them at the CA, then mark them done in <a href="{}">Certificates to revoke at the '
        "CA</a>.",
        count,
        url,
    )


def _certificate_link(cert: Certificate | None):
    if cert is None:
        return "—"
    url = reverse("admin:certificates_certificate_change", args=[cert.pk])
    return format_html('<a href="{}">{}</a>', url, cert)


def _redirect_to(cert: Certificate) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:certificates_certificate_change", args=[cert.pk]))


def _certificates_response(queryset, encoding: str) -> HttpResponse:
    """One certificate as .pem/.cer; several as a PEM bundle or a zip of DER files."""
    certs = list(queryset.select_related(None).only("serial", "certificate_pem"))
    if encoding == "pem":
        body = "".join(c.certificate_pem for c in certs)
        name = f"{certs[0].serial}.pem" if len(certs) == 1 else "certificates.pem"
        return _attachment(body, "application/x-pem-file", name)
    ders = [(c.serial, c.certificate.public_bytes(serialization.Encoding.DER)) for c in certs]
    if len(ders) == 1:
        return _attachment(ders[0][1], "application/pkix-cert", f"{ders[0][0]}.cer")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for serial, der in ders:
            archive.writestr(f"{serial}.cer", der)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return _attachment(buffer.getvalue(), "application/zip", f"certificates-{stamp}.zip")


def _attachment(body, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class PendingFilter(admin.SimpleListFilter):
    title = "decision"
    parameter_name = "decision"

    def lookups(self, request, model_admin):
        return [("pending", "Waiting for approval"), ("decided", "Decided")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(status=CertificateRequest.Status.PENDING)
        if self.value() == "decided":
            return queryset.exclude(status=CertificateRequest.Status.PENDING)
        return queryset


@admin.register(CertificateRequest)
class CertificateRequestAdmin(admin.ModelAdmin):
    """Enrollment requests; those of "approval required" templates wait here."""

    list_display = [
        "requested_subject",
        "template",
        "status",
        "renewal",
        "device",
        "user",
        "source_ip",
        "created_at",
        "decided_by",
    ]
    list_filter = [PendingFilter, "status", "template", "renewal"]
    search_fields = ["requested_subject", "transaction_id", "public_key_sha256"]
    list_select_related = ["template", "device", "user", "decided_by"]
    show_full_result_count = False
    actions = ["approve_selected", "reject_selected"]
    fields = [
        "template",
        "transaction_id",
        "status",
        "reason",
        "renewal",
        "renewal_of",
        "requested_subject",
        "requested_sans",
        "public_key_sha256",
        "device",
        "user",
        "certificate",
        "source_ip",
        "created_at",
        "decided_at",
        "decided_by",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(
        description="Approve selected requests (issue the certificates)", permissions=["change"]
    )
    def approve_selected(self, request, queryset) -> None:
        self._decide(request, queryset, approve_request, "approved")

    @admin.action(description="Reject selected requests", permissions=["change"])
    def reject_selected(self, request, queryset) -> None:
        self._decide(request, queryset, reject_request, "rejected")

    def _decide(self, request, queryset, decide, verb: str) -> None:
        done = 0
        for row in queryset:
            try:
                decide(certificate_request=row, actor=request.user, request=request)
                done += 1
            except (RequestNotPending, IssuanceRefused) as exc:
                self.message_user(request, f"{row}: {exc}", messages.WARNING)
        self.message_user(request, f"{done} request(s) {verb}.", messages.SUCCESS)


@admin.register(LifecycleSettings)
class LifecycleSettingsAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The lifecycle settings: one row, changed here, never added twice or deleted."""

    list_display = [
        "__str__",
        "revocation_grace_hours",
        "expiry_notice_days",
        "identity_purge_days",
        "updated_at",
    ]
    fields = [
        "revocation_grace_hours",
        "expiry_notice_days",
        "expiry_notice_recipients",
        "identity_purge_days",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not LifecycleSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        return {"revocation_grace_hours": settings.MDMCERTS_REVOCATION_GRACE_HOURS}

    def changelist_view(self, request: HttpRequest, extra_context=None):
        row = LifecycleSettings.objects.first()
        if row is not None:
            return HttpResponseRedirect(
                reverse("admin:certificates_lifecyclesettings_change", args=[row.pk])
            )
        return super().changelist_view(request, extra_context)
