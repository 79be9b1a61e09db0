"""Portal views: thin, every row looked up through ``apps.portal.services`` so that a
user only ever reaches their own (404 for anyone else's id, so ids reveal nothing)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_GET, require_http_methods

from apps.certificates.choices import IdentityPurpose
from apps.certificates.uploads import (
    ReplaceConfirmationNeeded,
    UploadRejected,
    delete_user_identity,
    store_user_identity,
)
from apps.portal import services
from apps.portal.forms import SignInForm, UploadForm


class SignInView(auth_views.LoginView):
    """Django's sign-in (throttled by django-axes through the authentication backends)."""

    template_name = "portal/sign_in.html"
    form_class = SignInForm
    redirect_authenticated_user = True
    # Here rather than LOGIN_REDIRECT_URL, which the console's sign-in would follow too.
    next_page = reverse_lazy("portal:home")


class SignOutView(auth_views.LogoutView):
    """POST only (Django's LogoutView): a link or an image cannot sign anyone out."""

    next_page = reverse_lazy("portal:sign-in")

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response


class PasswordChange(auth_views.PasswordChangeView):
    """Django's password change (old password, new one twice, the password validators);
    the session stays signed in, the change is audited."""

    template_name = "portal/password_change.html"
    success_url = reverse_lazy("portal:home")

    def form_valid(self, form):
        response = super().form_valid(form)
        services.record_password_change(user=self.request.user, request=self.request)
        messages.success(self.request, "Your password is changed.")
        return response


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The overview: what needs the user's attention, and counts that lead to the rest."""
    devices = services.my_devices(request.user)
    context = {
        "devices": devices,
        "missing": services.missing_uploads(devices),
        "failed": [(s.device, d) for s in devices for d in s.failed],
        "uploads": services.my_uploads(request.user),
        "certificate_count": services.my_certificates(request.user).count(),
    }
    return render(request, "portal/home.html", context)


@require_GET
@login_required
def devices(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/devices.html", {"devices": services.my_devices(request.user)})


@require_GET
@login_required
def certificates(request: HttpRequest) -> HttpResponse:
    context = {
        "uploads": services.my_uploads(request.user),
        "certificates": services.my_certificates(request.user),
    }
    return render(request, "portal/certificates.html", context)


@require_GET
@login_required
def download_certificate(request: HttpRequest, pk: int) -> HttpResponse:
    """The public certificate (PEM) of one of the user's certificates; never a key."""
    cert = get_object_or_404(services.my_certificates(request.user), pk=pk)
    response = HttpResponse(cert.certificate_pem, content_type="application/x-pem-file")
    response["Content-Disposition"] = f'attachment; filename="{cert.serial}.pem"'
    return response


@require_http_methods(["GET", "POST"])
@login_required
def upload(request: HttpRequest) -> HttpResponse:
    bound = (request.POST, request.FILES) if request.method == "POST" else (None, None)
    form = UploadForm(*bound, initial=_initial(request))
    if form.is_valid():
        purpose, password = form.cleaned_data["purpose"], form.cleaned_data["password"]
        data = form.read_file()
        try:
            identity = store_user_identity(
                user=request.user,
                purpose=purpose,
                data=data,
                password=password,
                actor=request.user,
                request=request,
            )
        except ReplaceConfirmationNeeded:
            services.hold_pending_upload(
                session=request.session,
                user=request.user,
                purpose=purpose,
                filename=form.cleaned_data["file"].name,
                data=data,
                password=password,
            )
            return redirect("portal:upload-confirm")
        except UploadRejected as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, _stored_message(identity))
            return redirect("portal:certificates")
    context = {"form": form, "uploads": services.my_uploads(request.user)}
    return render(request, "portal/upload.html", context, status=400 if form.errors else 200)


def _initial(request: HttpRequest) -> dict:
    purpose = request.GET.get("purpose", "")
    return {"purpose": purpose} if purpose in IdentityPurpose.values else {}


def _stored_message(identity) -> str:
    return (
        f"Your {identity.get_purpose_display()} certificate is uploaded. Your devices "
        "receive it at their next check-in."
    )


@require_http_methods(["GET", "POST"])
@login_required
def confirm_replace(request: HttpRequest) -> HttpResponse:
    """Step two of an upload that would replace the current one for its purpose."""
    pending = services.pending_upload(session=request.session, user=request.user)
    if pending is None:
        messages.warning(
            request, "There is no upload waiting for confirmation (it may have expired): "
            "upload the file again.",
        )  # fmt: skip
        return redirect("portal:upload")
    if request.method == "POST":
        return _decide_replace(request)
    context = {
        "pending": pending,
        "current": services.my_uploads(request.user).filter(purpose=pending.purpose).first(),
        "ttl_minutes": int(services.PENDING_UPLOAD_TTL.total_seconds() // 60),
    }
    return render(request, "portal/upload_confirm.html", context)


def _decide_replace(request: HttpRequest) -> HttpResponse:
    if request.POST.get("decision") != "replace":
        services.drop_pending_upload(session=request.session)
        messages.info(request, "Nothing changed: your current certificate stays.")
        return redirect("portal:certificates")
    pending = services.take_pending_upload(session=request.session, user=request.user)
    if pending is None:
        return redirect("portal:upload-confirm")
    try:
        identity = store_user_identity(
            user=request.user,
            purpose=pending.purpose,
            data=pending.data,
            password=pending.password,
            replace=True,
            actor=request.user,
            request=request,
        )
    except UploadRejected as exc:
        messages.error(request, exc.message)
        return redirect(f"{reverse('portal:upload')}?purpose={pending.purpose}")
    messages.success(request, _stored_message(identity) + " The previous one is retired.")
    return redirect("portal:certificates")


@require_http_methods(["GET", "POST"])
@login_required
def delete_upload(request: HttpRequest, pk: int) -> HttpResponse:
    identity = get_object_or_404(services.my_uploads(request.user), pk=pk)
    if request.method == "POST":
        label = identity.get_purpose_display()
        delete_user_identity(identity=identity, actor=request.user, request=request)
        messages.success(
            request,
            f"Your {label} certificate is deleted. Devices no longer receive it; profiles "
            "that need it report it missing until you upload another.",
        )
        return redirect("portal:certificates")
    return render(request, "portal/upload_delete.html", {"identity": identity})


def locked_out(request: HttpRequest, response=None, credentials=None) -> HttpResponse:
    """django-axes' lockout response (portal and console sign-in alike): what happened
    and what to do, as 429 Too Many Requests."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    # Back to the sign-in page that was posted to: the portal's or the console's.
    context = {"minutes": minutes, "sign_in_url": request.path}
    return render(request, "portal/locked_out.html", context, status=429)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A refused form post (missing or stale CSRF token): 403, and how to get going again."""
    return render(request, "portal/csrf_failure.html", status=403)
