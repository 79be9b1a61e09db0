"""The audit trail in the console: a read-only list and per-object modification history."""

from django.contrib import admin
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from apps.audit.models import AuditEvent
from apps.audit.services import history_for, record_change, record_deletion, snapshot


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Append-only: nobody adds, changes or deletes audit events from the console."""

    list_display = ["created_at", "actor_repr", "action", "object_link", "source_ip"]
    list_filter = ["action", "content_type"]
    search_fields = ["object_repr", "actor_repr", "message", "object_id"]
    list_select_related = ["content_type"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = [
        "created_at",
        "actor_repr",
        "action",
        "content_type",
        "object_id",
        "object_repr",
        "changes_table",
        "message",
        "source_ip",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, event: AuditEvent):
        if event.content_type is None or not event.object_id:
            return event.object_repr
        try:
            url = reverse(
                f"admin:{event.content_type.app_label}_{event.content_type.model}_change",
                args=[event.object_id],
            )
        except NoReverseMatch:
            return event.object_repr
        return format_html('<a href="{}">{}</a>', url, event.object_repr)

    @admin.display(description="changes")
    def changes_table(self, event: AuditEvent):
        return changes_html(event.changes)


def changes_html(changes: dict):
    if not changes:
        return "—"
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((field, _show(old), _show(new)) for field, (old, new) in changes.items()),
    )
    return format_html(
        '<table class="audit-changes"><thead><tr><th>field</th><th>before</th><th>after</th>'
        "</tr></thead><tbody>{}</tbody></table>",
        rows,
    )


def _show(value) -> str:
    return "—" if value in (None, "") else str(value)


class AuditedAdminMixin:
    """Records an audit event for every add, change and delete made in the console, and
    shows the object's audit events as its "Modification history"."""

    object_history_template = "admin/audit/object_history.html"

    def save_model(self, request, obj, form, change) -> None:
        request._audit_before = snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if hasattr(request, "_audit_before"):
            record_change(obj=form.instance, before=request._audit_before, request=request)

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            record_deletion(obj=obj, request=request)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                record_deletion(obj=obj, request=request)
            super().delete_queryset(request, queryset)

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_or_change_permission(request, obj):
            return super().history_view(request, object_id, extra_context)
        events = [(event, changes_html(event.changes)) for event in history_for(obj)]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Modification history: {obj}",
            "subtitle": None,
            "object": obj,
            "opts": self.model._meta,
            "events": events,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.object_history_template, context)
