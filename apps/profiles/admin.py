"""The profile editor in the console: payloads, assignments, delivery state, audit history,
and a .mobileconfig for one device to test by hand on a real Mac or iPhone."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify

from apps.audit.admin import AuditedAdminMixin
from apps.audit.services import record_change, record_deletion, snapshot
from apps.certificates.identities import generate_early
from apps.enrollment.choices import ChallengeType
from apps.enrollment.services import mint_challenge
from apps.enrollment.variables import VariableValueMissing
from apps.pki.choices import CAKind
from apps.profiles.choices import IDENTITY_PAYLOAD_KINDS, PayloadKind
from apps.profiles.forms import DeviceChoiceForm, PayloadFormSet
from apps.profiles.models import Delivery, Profile, ProfileAssignment, ProfilePayload
from apps.profiles.rendering import ProfileNotRenderable, mobileconfig
from apps.profiles.services import (
    assign,
    delete_profile,
    devices_holding,
    record_download,
    record_profile_edit,
    unassign,
)

MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
IDENTITY_KINDS = [PayloadKind.WIFI, PayloadKind.VPN, PayloadKind.EMAIL]
# (kinds, title, fields, description) of each kind's fieldset.
KIND_FIELDSETS = [
    (
        [PayloadKind.SCEP, PayloadKind.PKCS12],
        "Request template",
        ["template"],
        "SCEP: a template whose keys the device generates; the device enrolls over SCEP at "
        "the template's endpoint with its subject and SANs (Apple devices: RSA 2048 or "
        "4096). PKCS#12 identity: a template whose keys the server generates; mdmcerts "
        "generates one identity per device and template (when the profile is assigned, or "
        "at the latest when it is delivered) and delivers it as a password-protected "
        "PKCS#12. The key is never shown or downloadable.",
    ),
    (
        [PayloadKind.TRUSTED_CERTIFICATE, PayloadKind.SINGLE_FILE],
        "CA server",
        ["ca"],
        "Trusted certificate: the CA server's certificate and every issuer above it are "
        "installed as trusted. Single file identity: a CA server of that kind, whose one "
        "identity every device gets as a PKCS#12.",
    ),
    (
        [PayloadKind.USER_PROVIDED],
        "User-provided certificate",
        ["user_identity_purpose"],
        "The device owner's uploaded certificate for this purpose, delivered as a PKCS#12 "
        "with a new random password per delivery. Until the owner uploads one, the "
        'delivery fails and the portal\'s "My devices" page tells them what to upload.',
    ),
    (
        [PayloadKind.WIFI],
        "Wi-Fi",
        ["ssid", "wifi_security", ("hidden_network", "auto_join"), "trusted_server_names"],
        "Needs the SSID, the security and an identity (a SCEP or PKCS#12 payload of this "
        "profile: save it first). EAP-TLS trusts this profile's trusted-certificate payloads "
        "and the RADIUS server names listed.",
    ),
    (
        [PayloadKind.VPN],
        "VPN",
        ["vpn_type", "server", "remote_identifier", "account"],
        "Needs the VPN type, the server and an identity (a SCEP or PKCS#12 payload of this "
        "profile). "
        "Server, remote identifier and account may hold variables such as $USERID$.",
    ),
    (
        [PayloadKind.EMAIL],
        "Exchange ActiveSync / email",
        ["host", "use_ssl", "email_address", "user_name"],
        "Needs the host, the email address and an identity (a SCEP or PKCS#12 payload of "
        "this profile). Address and user name may hold variables such as $EMAIL$.",
    ),
]


class PayloadInline(admin.StackedInline):
    """Payloads in order; each kind's fields in its own fieldset (the others are hidden
    by payload_editor.js once a kind is chosen)."""

    model = ProfilePayload
    formset = PayloadFormSet
    extra = 0
    readonly_fields = ["uuid"]
    fieldsets = [
        (None, {"fields": [("kind", "display_name", "position"), "uuid"]}),
        *[
            (
                title,
                {
                    "fields": fields,
                    "description": description,
                    "classes": ["payload-kind", *(f"payload-kind-{kind}" for kind in kinds)],
                },
            )
            for kinds, title, fields, description in KIND_FIELDSETS
        ],
        (
            "Identity certificate",
            {
                "fields": ["identity"],
                "description": "Wi-Fi, VPN and email authenticate with the certificate of a "
                "SCEP or PKCS#12 identity payload of this profile. A new one can be chosen "
                "once saved.",
                "classes": [
                    "payload-kind",
                    *(f"payload-kind-{kind}" for kind in IDENTITY_KINDS),
                ],
            },
        ),
    ]

    class Media:
        js = ["profiles/payload_editor.js"]

    def get_formset(self, request: HttpRequest, obj: Profile | None = None, **kwargs):
        request._profile_being_edited = obj
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "identity":
            profile = getattr(request, "_profile_being_edited", None)
            providers = ProfilePayload.objects.filter(
                profile=profile, kind__in=IDENTITY_PAYLOAD_KINDS
            )
            kwargs["queryset"] = providers if profile is not None else ProfilePayload.objects.none()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class AssignmentInline(admin.TabularInline):
    model = ProfileAssignment
    extra = 0
    fields = ["group", "device", "created_at"]
    readonly_fields = ["created_at"]
    raw_id_fields = ["device"]


@admin.register(Profile)
class ProfileAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Profiles with their payloads and assignments. Every save that changes anything
    increments the version (devices get the profile again) and is audited."""

    inlines = [PayloadInline, AssignmentInline]
    list_display = [
        "name",
        "identifier",
        "platform",
        "version",
        "payload_count",
        "signing_ca",
        "updated_at",
    ]
    list_filter = ["platform", "signing_ca"]
    search_fields = ["name", "identifier", "description"]
    list_select_related = ["signing_ca"]
    readonly_fields = ["uuid", "version", "delivery_state", "download"]
    fieldsets = [
        (None, {"fields": ["name", "identifier", "description", "platform", "signing_ca"]}),
        ("State", {"fields": ["uuid", "version", "delivery_state", "download"]}),
    ]
    actions = ["download_for_device"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(payload_total=Count("payloads"))

    @admin.display(description="payloads", ordering="payload_total")
    def payload_count(self, profile: Profile) -> int:
        return profile.payload_total

    @admin.display(description="delivery (devices per status)")
    def delivery_state(self, profile: Profile):
        if profile.pk is None:
            return "—"
        counts = (
            Delivery.objects.filter(profile=profile)
            .values_list("status")
            .annotate(total=Count("id"))
            .order_by("status")
        )
        changelist = reverse("admin:profiles_delivery_changelist")
        links = format_html_join(
            " · ",
            '<a href="{}?profile__id__exact={}&status__exact={}">{}: {}</a>',
            (
                (changelist, profile.pk, status, Delivery(status=status).get_status_display(), n)
                for status, n in counts
            ),
        )
        return links or "not delivered to any device yet"

    @admin.display(description=".mobileconfig")
    def download(self, profile: Profile):
        if profile.pk is None:
            return "—"
        return format_html(
            '<a href="{}">Download .mobileconfig for a device…</a>',
            reverse("admin:profiles_profile_mobileconfig", args=[profile.pk]),
        )

    def save_model(self, request, obj: Profile, form, change: bool) -> None:
        request._profile_before = snapshot(Profile.objects.get(pk=obj.pk)) if change else None
        obj.save()

    def save_formset(self, request, form, formset, change: bool) -> None:
        if formset.model is not ProfileAssignment:
            return super().save_formset(request, form, formset, change)
        # Each assignment keeps its own audit trail; the profile's event comes after.
        for assignment in formset.save(commit=False):
            before = (
                snapshot(ProfileAssignment.objects.get(pk=assignment.pk)) if assignment.pk else None
            )
            assignment.save()
            record_change(obj=assignment, before=before, request=request)
        for assignment in formset.deleted_objects:
            record_deletion(obj=assignment, request=request)
            assignment.delete()
        if formset.new_objects:
            generate_early(profile=form.instance)
        return None

    def save_related(self, request, form, formsets, change: bool) -> None:
        admin.ModelAdmin.save_related(self, request, form, formsets, change)
        record_profile_edit(profile=form.instance, before=request._profile_before, request=request)

    def get_deleted_objects(self, objs, request):
        # A profile still on devices is protected: unassign it first so they remove it.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for profile in objs:
            holding = devices_holding(profile)
            if holding:
                protected.append(f"{profile}: still on {holding} device(s); unassign it first")
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj: Profile) -> None:
        delete_profile(profile=obj, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for profile in queryset:
            delete_profile(profile=profile, request=request)

    def get_urls(self):
        return [
            path(
                "<int:pk>/mobileconfig/",
                self.admin_site.admin_view(self.mobileconfig_view),
                name="profiles_profile_mobileconfig",
            ),
            *super().get_urls(),
        ]

    @admin.action(description="Download .mobileconfig for a device…", permissions=["change"])
    def download_for_device(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one profile.", messages.WARNING)
            return None
        return HttpResponseRedirect(
            reverse("admin:profiles_profile_mobileconfig", args=[queryset.get().pk])
        )

    def mobileconfig_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Pick a device; get the profile rendered for it, with a fresh dynamic challenge
        per dynamic SCEP payload (nothing else is stored). Needs change rights on the
        profile and the right to mint challenges: the file holds live challenges."""
        profile = get_object_or_404(Profile, pk=pk)
        if not (
            self.has_change_permission(request, profile)
            and request.user.has_perm("enrollment.add_challenge")
        ):
            raise PermissionDenied
        form = DeviceChoiceForm(
            request.POST if request.method == "POST" else None, admin_site=self.admin_site
        )
        if form.is_valid():
            device = form.cleaned_data["device"]
            try:
                return _mobileconfig_download(request, profile, device)
            except (ProfileNotRenderable, VariableValueMissing) as exc:
                form.add_error(None, f"This profile cannot be rendered for {device}: {exc}.")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Download .mobileconfig: {profile}",
            "opts": self.model._meta,
            "original": profile,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/profiles/profile/mobileconfig.html", context)


def _mobileconfig_download(request: HttpRequest, profile: Profile, device) -> HttpResponse:
    # Atomic: a profile that cannot be rendered leaves no minted challenge behind.
    with transaction.atomic():
        challenges = {
            payload.uuid: mint_challenge(template=payload.template, device=device)[1]
            for payload in profile.payloads.filter(
                kind=PayloadKind.SCEP, template__challenge_type=ChallengeType.DYNAMIC
            )
            .exclude(template__ca__kind=CAKind.SCEP)  # an external CA checks its own challenge
            .select_related("template")
        }
        body = mobileconfig(profile, device=device, challenges=challenges)
        record_download(profile=profile, device=device, request=request)
    response = HttpResponse(body, content_type=MOBILECONFIG_TYPE)
    filename = f"{slugify(profile.identifier)}-{slugify(device.name) or device.pk}.mobileconfig"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(ProfileAssignment)
class ProfileAssignmentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Assignments are made and removed, never changed: each one bumps its profile's
    version and is audited (``profiles.services.assign`` / ``unassign``)."""

    list_display = ["profile", "group", "device", "created_at"]
    list_filter = ["profile"]
    search_fields = ["profile__name", "group__name", "device__name", "device__serial_number"]
    list_select_related = ["profile", "group", "device"]
    raw_id_fields = ["device"]
    fields = ["profile", "group", "device", "created_at"]
    readonly_fields = ["created_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.fields if obj is not None else self.readonly_fields

    def save_model(self, request, obj: ProfileAssignment, form, change: bool) -> None:
        if change:
            return
        created = assign(profile=obj.profile, group=obj.group, device=obj.device, request=request)
        obj.pk, obj.created_at = created.pk, created.created_at

    def save_related(self, request, form, formsets, change: bool) -> None:
        """Nothing related to save; the service recorded the events."""

    def delete_model(self, request, obj: ProfileAssignment) -> None:
        unassign(assignment=obj, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for assignment in queryset.select_related("group", "device"):
            unassign(assignment=assignment, request=request)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """Where each profile stands on each device. Read-only: delivery changes it."""

    list_display = [
        "device",
        "profile",
        "status",
        "delivered_version",
        "profile_version",
        "generation",
        "delivered_at",
        "acknowledged_at",
        "error",
    ]
    list_filter = ["status", "profile"]
    search_fields = ["device__name", "device__serial_number", "profile__name", "error"]
    list_select_related = ["device", "profile"]
    show_full_result_count = False

    @admin.display(description="profile version", ordering="profile__version")
    def profile_version(self, delivery: Delivery) -> int:
        return delivery.profile.version

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
