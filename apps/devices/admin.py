"""Devices and user attributes in the console."""

from django.contrib import admin

from apps.audit.admin import AuditedAdminMixin
from apps.devices.models import Device, UserAttributes


@admin.register(Device)
class DeviceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "platform", "owner", "serial_number", "status", "last_checkin_at"]
    list_filter = ["platform", "status"]
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


@admin.register(UserAttributes)
class UserAttributesAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "upn", "display_name", "realm"]
    search_fields = ["user__username", "upn", "display_name", "dn"]
    raw_id_fields = ["user"]
