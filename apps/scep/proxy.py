"""The SCEP proxy: devices enroll with an external SCEP CA through mdmcerts.

A template of an external SCEP CA in proxy mode gives each device a SCEP URL of its own,
``PUBLIC_BASE_URL/scep-proxy/<token>/pkiclient.exe``. The token is signed by mdmcerts
(``django.core.signing`` under its own salt) and names the device, the template, the
profile that delivered it and an expiry; nothing is stored. A signature beats a random
token kept hashed here: the proxy must answer every GetCACaps, GetCACert and PKIOperation
of the enrollment, and each would otherwise look a row up, while the token stands for no
secret worth revoking on its own: every request checks again that the device is enrolled
and that the profile still targets it and still carries the template, so unassigning the
profile or unenrolling the device ends the token at once.

Its lifetime is ``TOKEN_LIFETIME`` (7 days), not the hour of a dynamic challenge: the URL
serves the whole enrollment, including the CertPolls of a request the CA keeps pending
for an approval, and a device that was offline when it got its profile. Each delivery
(renewal, redelivery) renders a fresh token.

The device's pkiMessage is encrypted to the external CA and carries the CA's challenge,
so it is relayed unchanged, as is the CA's answer; mdmcerts reads only the clear signed
attributes (message type, transaction id, pkiStatus) for its audit log.
"""

import base64
import datetime
import logging
from dataclasses import dataclass

from asn1crypto.core import PrintableString
from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.devices.choices import DeviceStatus
from apps.devices.models import Device
from apps.enrollment.choices import ExternalDelivery
from apps.enrollment.models import CertificateTemplate
from apps.pki.backends.scep import UpstreamError, UpstreamReply, upstream_for
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Profile
from apps.scep.protocol import MalformedMessage, MessageType, PKIStatus, decode_get_message
from apps.scep.protocol.cms import load_signed_message
from apps.scep.protocol.constants import (
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    OID_TRANSACTION_ID,
)
from apps.scep.protocol.errors import ProtocolError
from apps.scep.views import (
    TOO_LARGE,
    RawBodyParser,
    get_message_param,
    posted_message,
    text,
)

logger = logging.getLogger(__name__)

SIGNING_SALT = "mdmcerts.scep-proxy"
TOKEN_LIFETIME = datetime.timedelta(days=7)
# GET operations relayed as they are; PKIOperation is read before it is relayed.
RELAYED_GETS = ("GetCACaps", "GetCACert", "GetNextCACert")
ENROLLING = (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ)


class ProxyRefused(Exception):
    """The token does not let this request through; ``str()`` says why (a 403)."""


@dataclass(frozen=True)
class ProxyGrant:
    """What a valid token lets through: one device enrolling for one template of an
    external SCEP CA, on behalf of one profile."""

    device: Device
    template: CertificateTemplate
    profile: Profile

    @property
    def ca(self) -> CertificateAuthority:
        return self.template.ca


@dataclass(frozen=True)
class RelayOutcome:
    """A relayed PKIOperation: what it asked and what the CA said, for the audit log."""

    message_type: str
    transaction_id: str
    status: str


def proxy_token(
    *,
    device: Device,
    template: CertificateTemplate,
    profile: Profile,
    now: datetime.datetime | None = None,
) -> str:
    """A signed token for ``device`` enrolling for ``template`` through ``profile``,
    valid for ``TOKEN_LIFETIME``."""
    expires = (now or timezone.now()) + TOKEN_LIFETIME
    claims = {"d": device.pk, "t": template.pk, "p": profile.pk, "e": int(expires.timestamp())}
    return signing.dumps(claims, salt=SIGNING_SALT)


def proxy_url(*, device: Device, template: CertificateTemplate, profile: Profile) -> str:
    """The SCEP URL a proxy-mode payload gives ``device``."""
    token = proxy_token(device=device, template=template, profile=profile)
    return f"{settings.PUBLIC_BASE_URL}/scep-proxy/{token}/pkiclient.exe"


def grant_for(token: str, *, now: datetime.datetime | None = None) -> ProxyGrant:
    """What ``token`` lets through now; ``ProxyRefused`` if it is forged, altered or
    expired, or its device, profile or template no longer allow it."""
    try:
        claims = signing.loads(token, salt=SIGNING_SALT)
        device_id, template_id, profile_id = (int(claims[key]) for key in ("d", "t", "p"))
        expires = int(claims["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise ProxyRefused("this SCEP proxy URL is not valid") from None
    if (now or timezone.now()).timestamp() >= expires:
        raise ProxyRefused(
            "this SCEP proxy URL has expired; the device gets a new one with its profile"
        )
    device = Device.objects.filter(pk=device_id).first()
    template = CertificateTemplate.objects.select_related("ca").filter(pk=template_id).first()
    profile = Profile.objects.filter(pk=profile_id).first()
    if device is None or template is None or profile is None:
        raise ProxyRefused("this SCEP proxy URL names a device, profile or template that is gone")
    grant = ProxyGrant(device=device, template=template, profile=profile)
    _check_grant(grant)
    return grant


def _check_grant(grant: ProxyGrant) -> None:
    # Imported here: delivery renders profiles, and rendering builds proxy URLs.
    from apps.profiles.delivery import targeted_profiles

    if grant.device.status != DeviceStatus.ENROLLED:
        raise ProxyRefused("the device of this SCEP proxy URL is not enrolled")
    template = grant.template
    if template.ca.kind != CAKind.SCEP or template.external_delivery != ExternalDelivery.PROXY:
        raise ProxyRefused(f"request template {template} no longer enrolls through the SCEP proxy")
    if not targeted_profiles(grant.device).filter(pk=grant.profile.pk).exists():
        raise ProxyRefused("the profile of this SCEP proxy URL no longer targets its device")
    carried = grant.profile.payloads.filter(kind=PayloadKind.SCEP, template=template)
    if not carried.exists():
        raise ProxyRefused(
            f"the profile of this SCEP proxy URL no longer carries request template {template}"
        )


def relay_get(grant: ProxyGrant, *, operation: str, message: str | None) -> UpstreamReply:
    """GetCACaps, GetCACert or GetNextCACert at the external CA (with the device's
    ``message``, the CA identifier some CAs read)."""
    params = {"operation": operation}
    if message:
        params["message"] = message
    return upstream_for(grant.ca).get(params)


def relay_pki_operation(
    grant: ProxyGrant, *, der: bytes, by_post: bool, request: HttpRequest | None = None
) -> UpstreamReply:
    """Relay a device's pkiMessage to the external CA (as a POST or a GET, as the device
    sent it) and audit it with the CA's answer, never with the message itself.
    ``MalformedMessage`` if it is no pkiMessage: nothing is relayed then."""
    asked = _read_request(der)
    upstream = upstream_for(grant.ca)
    try:
        if by_post:
            reply = upstream.post_pki_operation(der)
        else:
            params = {"operation": "PKIOperation", "message": base64.b64encode(der).decode()}
            reply = upstream.get(params)
    except UpstreamError as exc:
        _audit(grant, RelayOutcome(*asked, status=f"not answered: {exc}"), request)
        raise
    _audit(grant, RelayOutcome(*asked, status=_answer_status(reply)), request)
    return reply


def _read_request(der: bytes) -> tuple[str, str]:
    """The message type and transaction id of a pkiMessage (its clear signed attributes)."""
    try:
        message = load_signed_message(der)
        kind = _printable(message.attribute(OID_MESSAGE_TYPE))
        transaction_id = _printable(message.attribute(OID_TRANSACTION_ID))
    except ProtocolError as exc:
        raise MalformedMessage(f"not a SCEP pkiMessage: {exc.reason}") from None
    except Exception:  # the boundary: hostile bytes raise nothing else
        raise MalformedMessage("not a SCEP pkiMessage") from None
    if kind is None or transaction_id is None:
        raise MalformedMessage("not a SCEP pkiMessage: no messageType or transactionID")
    return _message_type_name(kind), transaction_id


def _answer_status(reply: UpstreamReply) -> str:
    """pkiStatus of the CA's CertRep, or what else it answered."""
    if reply.status != 200:
        return f"HTTP {reply.status}"
    try:
        status = _printable(load_signed_message(reply.body).attribute(OID_PKI_STATUS))
        return PKIStatus(int(status)).name
    except Exception:  # any answer is relayed; only its description is at stake
        return "an unreadable answer"


def _printable(raw: bytes | None) -> str | None:
    return None if raw is None else str(PrintableString.load(raw).native)


def _message_type_name(kind: str) -> str:
    try:
        return MessageType(int(kind)).name
    except ValueError:
        return f"messageType {kind}"


def _audit(grant: ProxyGrant, outcome: RelayOutcome, request: HttpRequest | None) -> None:
    if outcome.status == PKIStatus.SUCCESS.name and outcome.message_type in {
        t.name for t in ENROLLING
    }:
        action = AuditAction.ISSUE
    elif outcome.status in (PKIStatus.SUCCESS.name, PKIStatus.PENDING.name):
        action = AuditAction.UPDATE
    else:
        action = AuditAction.ISSUE_FAILED
    record_event(
        action=action,
        obj=grant.device,
        request=request,
        message=(
            f"SCEP {outcome.message_type} relayed to {grant.ca} for request template "
            f"{grant.template} (profile {grant.profile}): {outcome.status}; "
            f"transaction {outcome.transaction_id[:64]}"
        ),
    )


# --- the view -------------------------------------------------------------------------


class ScepProxyView(APIView):
    """RFC 8894 relayed to an external SCEP CA: /scep-proxy/<token>/[any suffix]. The
    token is the only credential (devices send no other), checked at every request."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawBodyParser]
    renderer_classes = [JSONRenderer]  # only DRF's own error pages; SCEP answers are raw
    schema = None  # device-facing, not part of the staff API

    def get(self, request: Request, token: str, suffix: str = "") -> HttpResponse:
        try:
            grant = grant_for(token)
        except ProxyRefused as refusal:
            return _refused(refusal)
        operation = request.query_params.get("operation", "")
        if operation in RELAYED_GETS:
            message = request.query_params.get("message") or None
            return _relayed(lambda: relay_get(grant, operation=operation, message=message))
        if operation != "PKIOperation":
            return text("unknown or missing operation", status=400)
        param = get_message_param(request)
        if param is None:
            return text(TOO_LARGE, status=414)
        try:
            der = decode_get_message(param)
        except MalformedMessage as exc:
            return text(exc.reason, status=400)
        return self._pki_operation(grant, request, der, by_post=False)

    def post(self, request: Request, token: str, suffix: str = "") -> HttpResponse:
        try:
            grant = grant_for(token)
        except ProxyRefused as refusal:
            return _refused(refusal)
        if request.query_params.get("operation") != "PKIOperation":
            return text("POST is for operation=PKIOperation", status=400)
        body = posted_message(request)
        if body is None:
            return text(TOO_LARGE, status=413)
        return self._pki_operation(grant, request, body, by_post=True)

    def _pki_operation(
        self, grant: ProxyGrant, request: Request, der: bytes, *, by_post: bool
    ) -> HttpResponse:
        def relay() -> UpstreamReply:
            return relay_pki_operation(grant, der=der, by_post=by_post, request=request._request)

        try:
            return _relayed(relay)
        except MalformedMessage as exc:
            return text(exc.reason, status=400)


def _refused(refusal: ProxyRefused) -> HttpResponse:
    logger.info("SCEP proxy request refused: %s", refusal)
    return text(str(refusal), status=403)


def _relayed(call) -> HttpResponse:
    """The CA's answer as it came, or a 502/504 that says what went wrong upstream: a
    server error of the CA is not passed off as one of mdmcerts."""
    try:
        reply = call()
    except UpstreamError as exc:
        return text(f"the CA server did not answer: {exc}", status=_gateway_status(exc))
    if reply.status >= 500:
        return text(f"the CA server answered HTTP {reply.status}", status=502)
    content_type = reply.content_type or "application/octet-stream"
    return HttpResponse(reply.body, content_type=content_type, status=reply.status)


def _gateway_status(exc: UpstreamError) -> int:
    """504 when the CA did not answer within its timeout, else 502."""
    return 504 if getattr(exc, "timed_out", False) else 502
