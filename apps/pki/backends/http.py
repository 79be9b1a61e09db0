"""The one HTTP client of the external CA backends: explicit timeouts, no redirects.

Standard library only (``http.client``): a request either answers or fails with an
``HttpFailure`` whose message names the host, never a credential. The timeout bounds
each socket operation and the whole response is read against a deadline of the same
length, so a server that trickles bytes cannot hold a worker. Redirects are not followed:
an NDES password must not travel to another host.
"""

import http.client
import ssl
import time
import urllib.parse
from dataclasses import dataclass

MAX_RESPONSE_BYTES = 1024 * 1024
CHUNK = 64 * 1024


class HttpFailure(Exception):
    """The request did not get an answer; the message is safe to show."""


class HttpTimeout(HttpFailure):
    """The server did not answer (or finish its answer) within the timeout."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    content_type: str
    body: bytes


def describe(url: str) -> str:
    """``scheme://host:port/path`` of ``url``, without query or credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def tls_context(trust_bundle_pem: str) -> ssl.SSLContext:
    """The system's trust store plus the PEM certificates of ``trust_bundle_pem``."""
    context = ssl.create_default_context()
    if trust_bundle_pem.strip():
        context.load_verify_locations(cadata=trust_bundle_pem)
    return context


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    tls: ssl.SSLContext,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """One HTTP exchange with ``url``; ``HttpFailure`` when there is no answer in time."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    try:
        connection = _connection(parts, timeout, tls)
        try:
            connection.request(method, target, body=body, headers=headers or {})
            return _read(connection.getresponse(), time.monotonic() + timeout, timeout)
        finally:
            connection.close()
    except HttpFailure:
        raise
    except TimeoutError:
        raise HttpTimeout(f"{describe(url)} did not answer within {timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise HttpFailure(
            f"the TLS certificate of {parts.hostname} is not trusted ({exc.verify_message}); "
            "add its CA to the TLS trust bundle"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise HttpFailure(f"cannot reach {describe(url)}: {reason}") from None


def _connection(
    parts: urllib.parse.SplitResult, timeout: float, tls: ssl.SSLContext
) -> http.client.HTTPConnection:
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=tls)
    if parts.scheme == "http":
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    raise HttpFailure(f"unsupported URL scheme {parts.scheme!r}: use http or https")


def _read(response: http.client.HTTPResponse, deadline: float, timeout: float) -> HttpResponse:
    chunks, size = [], 0
    while chunk := response.read1(CHUNK):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise HttpFailure(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        if time.monotonic() > deadline:
            raise HttpTimeout(f"the answer did not arrive within {timeout:g} s")
        chunks.append(chunk)
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    return HttpResponse(status=response.status, content_type=content_type, body=b"".join(chunks))
