"""A stand-in external SCEP CA that only counts the requests it gets, for the SCEP proxy's
refusals (a refused request must reach no CA) and for a CA that fails: an HTTP 500 or
no answer at all. Not a SCEP implementation: the enrollments themselves run against
micromdm's scepserver (``tests/scepserver.py``).
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from apps.pki import external
from apps.pki.choices import ExternalChallengeType
from apps.pki.models import CertificateAuthority
from tests.factories import random_name, self_signed_ca
from tests.http_doubles import QuietHandler
from tests.ndes_double import CHALLENGE, PASSWORD, USERNAME

CAPS = b"POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\n"
SILENCE = 30  # seconds a "silent" CA holds a request at most (the proxy gives up long before)


@dataclass
class CountingUpstream:
    """An HTTP server on 127.0.0.1 that records each request; ``mode`` is "caps" (200 with
    GetCACaps' answer), "error" (500) or "silent" (never answers)."""

    url: str = ""
    mode: str = "caps"
    requests: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def hits(self) -> int:
        return len(self.requests)


def _handler(upstream: CountingUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._answer()

        def _answer(self) -> None:
            upstream.requests.append((self.command, self.path))
            if upstream.mode == "silent":
                upstream.release.wait(SILENCE)
                return
            status, body = (500, b"boom") if upstream.mode == "error" else (200, CAPS)
            self.reply(body, "text/plain", status)

    return Handler


@pytest.fixture
def counting_upstream() -> Iterator[CountingUpstream]:
    upstream = CountingUpstream()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream))
    httpd.daemon_threads = True
    upstream.url = f"http://127.0.0.1:{httpd.server_address[1]}/certsrv/mscep/mscep.dll"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield upstream
    upstream.release.set()
    httpd.shutdown()
    httpd.server_close()


def offline_external_ca(url: str, **fields) -> CertificateAuthority:
    """A CA server of kind ``scep`` at ``url`` whose CA certificate (a fresh self-signed
    one) is pinned without asking ``url`` for it; static challenge "counted-secret"."""
    name = random_name("external")
    fields.setdefault("scep_challenge_type", ExternalChallengeType.STATIC)
    fields.setdefault("scep_request_timeout_seconds", 2)
    ca = CertificateAuthority(name=name, slug=name, scep_url=url, **fields)
    ca.set_secret("scep_static_challenge", "counted-secret")
    external.pin(ca, [self_signed_ca(ec.generate_private_key(ec.SECP256R1()))])
    return external.save_external_ca(ca, before=None)


def ndes_external_ca(
    url: str, *, challenge_url: str, password: str = PASSWORD, **fields
) -> CertificateAuthority:
    """``offline_external_ca`` whose dynamic challenges come from the NDES ``mscep_admin``
    page at ``challenge_url`` (``tests/ndes_double.py``), asked as USERNAME with
    ``password``."""
    ca = offline_external_ca(
        url,
        scep_challenge_type=ExternalChallengeType.DYNAMIC,
        ndes_challenge_url=challenge_url,
        ndes_username=USERNAME,
        ndes_challenge_length=len(CHALLENGE),
        **fields,
    )
    ca.set_secret("ndes_password", password)
    ca.save()
    return ca
