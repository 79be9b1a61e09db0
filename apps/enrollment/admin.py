"""Request templates in the console."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from apps.audit.admin import AuditedAdminMixin
from apps.enrollment.forms import CertificateTemplateForm
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from apps.enrollment.services import delete_template
from apps.enrollment.variables import CANONICAL, MANAGEENGINE_ALIASES, WORKSPACE_ONE_ALIASES


class SubjectAltNameInline(admin.TabularInline):
    model = TemplateSubjectAltName
    extra = 0
    fields = ["san_type", "value", "position"]


@admin.register(CertificateTemplate)
class CertificateTemplateAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Request templates: subject and SANs with lookup variables, key, usage, lifecycle."""

    form = CertificateTemplateForm
    inlines = [SubjectAltNameInline]
    list_display = [
        "name",
        "ca",
        "subject",
        "key_algorithm",
        "validity_days",
        "auto_renew",
        "challenge_type",
        "slug",
    ]
    list_filter = ["ca", "challenge_type", "auto_renew", "key_generation", "approval_required"]
    search_fields = ["name", "slug", "subject", "description"]
    list_select_related = ["ca"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["challenge_stored", "lookup_variables"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "ca"]}),
        (
            "Subject",
            {
                "fields": [
                    "subject",
                    "subject_source",
                    "allowed_request_san_types",
                    "lookup_variables",
                ]
            },
        ),
        (
            "Key",
            {
                "fields": [
                    "key_algorithm",
                    "key_generation",
                    "external_delivery",
                    "key_usage_digital_signature",
                    "key_usage_key_encipherment",
                    "eku_choices",
                    "custom_ekus",
                ]
            },
        ),
        (
            "Validity and lifecycle",
            {
                "fields": [
                    "validity_days",
                    "auto_renew",
                    "renew_before_days",
                    "revocation_enabled",
                    "revocation_grace_hours",
                ]
            },
        ),
        (
            "Challenge and attempts",
            {
                "fields": [
                    "challenge_type",
                    "challenge_stored",
                    "static_challenge_input",
                    "clear_static_challenge",
                    "max_failed_attempts",
                    "retry_interval_seconds",
                    "approval_required",
                    "allow_single_des",
                ]
            },
        ),
    ]

    def get_deleted_objects(self, objs, request):
        # Certificates keep their template for renewal and the inventory: a template
        # that issued any is protected, as the API refuses it too.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for template in objs:
            issued = template.certificates.count()
            if issued:
                protected.append(f"{template}: {issued} certificate(s) issued from it")
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj) -> None:
        delete_template(template=obj, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for template in queryset:
            delete_template(template=template, request=request)

    @admin.display(description="challenge password")
    def challenge_stored(self, template: CertificateTemplate) -> str:
        return "stored (encrypted)" if template.static_challenge else "none"

    @admin.display(description="lookup variables")
    def lookup_variables(self, template: CertificateTemplate | None = None):
        aliases: dict[str, list[str]] = {}
        for alias, name in MANAGEENGINE_ALIASES.items():
            aliases.setdefault(name, []).append(f"%{alias}%")
        for alias, name in WORKSPACE_ONE_ALIASES.items():
            aliases.setdefault(name, []).append(f"{{{alias}}}")
        rows = format_html_join(
            "",
            "<tr><td><code>${}$</code></td><td>{}</td><td>{}</td></tr>",
            (
                (name, meaning, " ".join(aliases.get(name, [])))
                for name, meaning in CANONICAL.items()
            ),
        )
        return format_html(
            "<details><summary>Variables for the subject and SAN values</summary>"
            "<table><thead><tr><th>variable</th><th>value</th><th>also written</th></tr></thead>"
            "<tbody>{}</tbody></table></details>",
            rows,
        )
