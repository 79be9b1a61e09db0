"""Devices, groups, enrollment codes and user attributes in the console."""

from django.contrib import admin, messages
from django.db.models import Count, F, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.audit.admin import AuditedAdminMixin
from apps.certificates.models import Certificate
from apps.devices import services
from apps.devices.models import (
    REPORTED_FACTS,
    Device,
    DeviceGroup,
    EnrollmentCode,
    InstalledCertificate,
    UserAttributes,
)
from apps.profiles.models import Delivery

FACTS = list(REPORTED_FACTS)
LIFECYCLE = [
    "status",
    "enrolled_at",
    "last_checkin_at",
    "last_inventory_at",
    "scan_requested",
    "group_list",
    "audit_history",
]


class ReadOnlyInline(admin.TabularInline):
    """Rows the device reports or delivery keeps: shown, never edited here."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class InstalledCertificateInline(ReadOnlyInline):
    model = InstalledCertificate
    verbose_name = "installed certificate"
    verbose_name_plural = "inventory (installed certificates at the last scan)"
    fields = ["subject", "issuer", "not_after", "issued_by_mdmcerts", "last_seen_at"]
    readonly_fields = fields

    @admin.display(description="issued by mdmcerts")
    def issued_by_mdmcerts(self, row: InstalledCertificate):
        if row.certificate_id is None:
            return "no"
        url = reverse("admin:certificates_certificate_change", args=[row.certificate_id])
        return format_html('<a href="{}">yes</a>', url)


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    verbose_name = "profile delivery"
    verbose_name_plural = "profiles"
    fields = [
        "profile",
        "status",
        "version",
        "generation",
        "error",
        "certificates",
        "delivered_at",
        "acknowledged_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("profile")

    @admin.display(description="version (delivered / current)")
    def version(self, delivery: Delivery) -> str:
        delivered = "—" if delivery.delivered_version is None else delivery.delivered_version
        return f"{delivered} / {delivery.profile.version}"

    @admin.display(description="certificates")
    def certificates(self, delivery: Delivery):
        rows = Certificate.objects.filter(device=delivery.device_id, profile=delivery.profile_id)
        links = [
            (reverse("admin:certificates_certificate_change", args=[cert.pk]), cert.serial[:16])
            for cert in rows.only("pk", "serial")
        ]
        return format_html_join(", ", '<a href="{}">{}</a>', links) or "—"


@admin.register(Device)
class DeviceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Managed devices: facts come from the device; staff name them, give them an owner
    and act on them (scan, redeliver, unenroll, mark wiped)."""

    list_display = [
        "name",
        "platform",
        "owner",
        "serial_number",
        "status",
        "last_checkin_at",
        "last_inventory_at",
    ]
    list_filter = ["platform", "status", "groups", "scan_requested"]
    search_fields = [
        "name",
        "serial_number",
        "udid",
        "uuid",
        "imei",
        "wifi_mac",
        "client_id",
        "owner__username",
    ]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    inlines = [DeliveryInline, InstalledCertificateInline]
    actions = ["scan_now", "redeliver_profiles", "unenroll_devices", "mark_wiped"]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["name", "owner", *FACTS]})]
        return [
            (None, {"fields": ["name", "owner"]}),
            ("Facts (reported by the device)", {"fields": FACTS}),
            ("Lifecycle", {"fields": LIFECYCLE}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [*FACTS, *LIFECYCLE]

    @admin.display(description="groups")
    def group_list(self, device: Device):
        links = [
            (reverse("admin:devices_devicegroup_change", args=[group.pk]), group.name)
            for group in device.groups.all()
        ]
        return format_html_join(", ", '<a href="{}">{}</a>', links) or "—"

    @admin.display(description="audit history")
    def audit_history(self, device: Device):
        url = reverse("admin:devices_device_history", args=[device.pk])
        return format_html('<a href="{}">Audit events of this device</a>', url)

    @admin.action(description="Scan now (inventory at next check-in)", permissions=["change"])
    def scan_now(self, request, queryset) -> None:
        for device in queryset:
            services.request_scan(device=device, request=request)
        self.message_user(request, f"{len(queryset)} device(s) will report their inventory.")

    @admin.action(description="Redeliver profiles", permissions=["change"])
    def redeliver_profiles(self, request, queryset) -> None:
        count = sum(
            services.redeliver_profiles(device=device, request=request) for device in queryset
        )
        self.message_user(request, f"{count} profile(s) will be delivered again.")

    @admin.action(description="Unenroll", permissions=["change"])
    def unenroll_devices(self, request, queryset) -> None:
        done = sum(services.unenroll(device=device, request=request) for device in queryset)
        self._report(request, done, len(queryset), "unenrolled", "was not enrolled")

    @admin.action(description="Mark wiped", permissions=["change"])
    def mark_wiped(self, request, queryset) -> None:
        done = sum(services.mark_wiped(device=device, request=request) for device in queryset)
        self._report(request, done, len(queryset), "marked wiped", "was marked wiped already")

    def _report(self, request, done: int, total: int, verb: str, skipped: str) -> None:
        self.message_user(request, f"{done} device(s) {verb}.", messages.SUCCESS)
        if done < total:
            self.message_user(request, f"{total - done} device(s) {skipped}.", messages.WARNING)


@admin.register(DeviceGroup)
class DeviceGroupAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Labels: profiles assigned to a group go to each of its devices."""

    list_display = ["name", "member_count", "description"]
    search_fields = ["name", "description"]
    filter_horizontal = ["devices"]

    def get_queryset(self, request) -> QuerySet[DeviceGroup]:
        return super().get_queryset(request).annotate(member_count=Count("devices"))

    @admin.display(description="devices", ordering="member_count")
    def member_count(self, group: DeviceGroup) -> int:
        return group.member_count


class CodeStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("usable", "Usable"),
            ("revoked", "Revoked"),
            ("expired", "Expired"),
            ("used", "Used up"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        expired = Q(expires_at__isnull=False, expires_at__lte=now)
        used = Q(max_uses__isnull=False, uses__gte=F("max_uses"))
        conditions = {
            "revoked": Q(revoked_at__isnull=False),
            "expired": Q(revoked_at__isnull=True) & expired,
            "used": Q(revoked_at__isnull=True) & ~expired & used,
            "usable": Q(revoked_at__isnull=True) & ~expired & ~used,
        }
        if self.value() in conditions:
            return queryset.filter(conditions[self.value()])
        return queryset


@admin.register(EnrollmentCode)
class EnrollmentCodeAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Codes devices enroll with. The code is shown once, when it is created; only its
    SHA-256 is kept."""

    list_display = [
        "name",
        "prefix",
        "owner",
        "group",
        "usage",
        "expires_at",
        "state_display",
        "created_at",
    ]
    list_filter = [CodeStateFilter, "group"]
    search_fields = ["name", "prefix", "owner__username"]
    list_select_related = ["owner", "group"]
    raw_id_fields = ["owner"]
    actions = ["revoke_codes"]
    readonly_fields = ["prefix", "uses", "state_display", "revoked_at", "created_at"]

    def get_fields(self, request, obj=None):
        editable = ["name", "owner", "group", "max_uses", "expires_at"]
        return editable if obj is None else [*editable, *self.readonly_fields]

    def save_model(self, request, obj, form, change) -> None:
        code = None if change else obj.assign_code()
        super().save_model(request, obj, form, change)
        if code:
            self.message_user(
                request,
                f"Enrollment code created. Copy it now, it is not shown again: {code}",
                messages.WARNING,
            )

    @admin.display(description="uses")
    def usage(self, code: EnrollmentCode) -> str:
        return f"{code.uses} / {'∞' if code.max_uses is None else code.max_uses}"

    @admin.display(description="state")
    def state_display(self, code: EnrollmentCode) -> str:
        return code.state()

    @admin.action(description="Revoke selected codes", permissions=["change"])
    def revoke_codes(self, request, queryset) -> None:
        done = sum(services.revoke_enrollment_code(code=code, request=request) for code in queryset)
        self.message_user(request, f"{done} enrollment code(s) revoked.")


@admin.register(UserAttributes)
class UserAttributesAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "upn", "display_name", "realm"]
    search_fields = ["user__username", "upn", "display_name", "dn"]
    raw_id_fields = ["user"]
