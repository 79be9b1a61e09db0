"""Identities in the console: which device holds which key mdmcerts generated or keeps.

Read-only, and the key is nowhere in it: no field, column, action or download shows or
exports ``private_key``. Identities are made by generation and upload and deleted by the
purge of undelivered ones, never from here. Registered by ``apps.certificates.admin``.
"""

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from apps.audit.admin import AuditedAdminMixin
from apps.certificates.models import Identity


class DeliveredFilter(admin.SimpleListFilter):
    title = "delivered"
    parameter_name = "delivered"

    def lookups(self, request, model_admin):
        return [("yes", "Delivered"), ("no", "Not delivered yet")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(delivered_at__isnull=self.value() == "no")
        return queryset


@admin.register(Identity)
class IdentityAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Identities (a certificate whose key mdmcerts holds, encrypted): to see, never to
    change. The certificate's own page revokes or downloads the certificate."""

    list_display = [
        "certificate_link",
        "source",
        "device",
        "user",
        "purpose",
        "template",
        "current",
        "delivered_at",
        "created_at",
    ]
    list_filter = ["current", DeliveredFilter, "certificate__source", "purpose", "template"]
    search_fields = [
        "certificate__subject",
        "certificate__serial",
        "certificate__fingerprint_sha256",
        "device__name",
        "device__serial_number",
        "user__username",
        "user__email",
    ]
    list_select_related = ["certificate", "device", "template", "user"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    fields = [
        "certificate_link",
        "source",
        "status",
        "device",
        "user",
        "purpose",
        "template",
        "current",
        "delivered_at",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="certificate", ordering="certificate__subject")
    def certificate_link(self, identity: Identity):
        url = reverse("admin:certificates_certificate_change", args=[identity.certificate_id])
        return format_html('<a href="{}">{}</a>', url, identity.certificate)

    @admin.display(description="source", ordering="certificate__source")
    def source(self, identity: Identity) -> str:
        return identity.certificate.get_source_display()

    @admin.display(description="certificate status", ordering="certificate__status")
    def status(self, identity: Identity) -> str:
        return identity.certificate.get_status_display()
