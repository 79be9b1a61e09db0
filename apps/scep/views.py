"""The device-facing SCEP endpoint: /scep/<template slug>/[any suffix]."""

import logging

from django.http import Http404, HttpResponse
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.scep import services
from apps.scep.protocol import MalformedMessage, decode_get_message
from apps.scep.protocol.constants import MAX_MESSAGE_SIZE

logger = logging.getLogger(__name__)

PKI_MESSAGE = "application/x-pki-message"
MAX_GET_MESSAGE = MAX_MESSAGE_SIZE * 4 // 3 + 1024  # base64 of the largest message, encoded
TOO_LARGE = "the message is too large"


class RawBodyParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return stream.read()


def text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, content_type="text/plain", status=status)


class ScepView(APIView):
    """RFC 8894 over HTTP. Devices authenticate with the challenge inside their request,
    so there is no session, token or CSRF here."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [RawBodyParser]
    renderer_classes = [JSONRenderer]  # only DRF's own error pages; SCEP answers are raw
    schema = None  # device-facing, not part of the staff API

    def get(self, request: Request, slug: str, suffix: str = "") -> HttpResponse:
        operation = request.query_params.get("operation", "")
        if operation == "PKIOperation":
            self._known(slug)
            param = get_message_param(request)
            if param is None:
                return text(TOO_LARGE, status=414)
            return self._pki_operation(slug, request, lambda: decode_get_message(param))
        endpoint = self._endpoint(slug)
        if operation == "GetCACaps":
            return text(services.ca_caps(endpoint))
        if operation == "GetCACert":
            return HttpResponse(
                services.ca_certs(endpoint), content_type="application/x-x509-ca-ra-cert"
            )
        if operation == "GetNextCACert":
            body = services.next_ca_certs(endpoint)
            if body is None:
                return text("this CA has no successor configured", status=404)
            return HttpResponse(body, content_type="application/x-x509-next-ca-cert")
        return text("unknown or missing operation", status=400)

    def post(self, request: Request, slug: str, suffix: str = "") -> HttpResponse:
        self._known(slug)
        if request.query_params.get("operation") != "PKIOperation":
            return text("POST is for operation=PKIOperation", status=400)
        body = posted_message(request)
        if body is None:
            return text(TOO_LARGE, status=413)
        return self._pki_operation(slug, request, lambda: body)

    def _known(self, slug: str) -> None:
        """404 for a slug no template has (as last loaded; PKIOperation loads it again)."""
        if services.loaded_endpoint(slug) is None:
            raise Http404("no SCEP endpoint here")

    def _endpoint(self, slug: str) -> services.Endpoint:
        endpoint = services.endpoint_for(slug)
        if endpoint is None:
            raise Http404("no SCEP endpoint here")
        return endpoint

    def _pki_operation(self, slug: str, request: Request, message) -> HttpResponse:
        try:
            reply = services.answer_pki_operation(slug, message(), request=request._request)
        except MalformedMessage as exc:
            return text(exc.reason, status=400)
        if reply is None:
            raise Http404("no SCEP endpoint here")
        return HttpResponse(reply, content_type=PKI_MESSAGE)


def get_message_param(request: Request) -> str | None:
    """The message parameter of a GET PKIOperation, still base64 and %-escaped; None when
    the query string is over ``MAX_GET_MESSAGE`` (answer 414)."""
    raw = request._request.META.get("QUERY_STRING", "")
    if len(raw) > MAX_GET_MESSAGE:
        return None
    return raw_message_param(raw) or request.query_params.get("message", "")


def posted_message(request: Request) -> bytes | None:
    """The body of a POST PKIOperation; None when it is over ``MAX_MESSAGE_SIZE`` by its
    Content-Length or by what it really holds (answer 413)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0  # as Django reads such a request: no body
    if length > MAX_MESSAGE_SIZE:
        return None
    body = request._request.read(MAX_MESSAGE_SIZE + 1)
    return None if len(body) > MAX_MESSAGE_SIZE else body


def raw_message_param(query_string: str) -> str | None:
    """The message parameter as sent: form decoding would turn the unescaped '+' that
    macOS sends into spaces; decode_get_message undoes the %-escapes itself."""
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if name == "message":
            return value
    return None
