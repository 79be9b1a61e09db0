"""A stand-in for Microsoft NDES's ``mscep_admin`` page, for dynamic challenges.

NDES is a proprietary Windows Server role that cannot run here, so a small
``http.server`` thread serves what its ``mscep_admin`` page answers: the challenge page
(in UTF-16 by default, as NDES sends it, or whatever ``body`` is set to), its "password
cache is full" and "no permission" pages, a 401 for wrong credentials, or no answer in
time (``stall``).

Test modules take the fixture by assignment (``ndes = ndes_double.ndes``)."""

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest

from tests.http_doubles import QuietHandler

USERNAME, PASSWORD = "ZYLKER\\svc-ndes", "correct horse battery"
CHALLENGE = "9E5A71C2B04D38F6"
PAGE = (
    "<HTML><Head><Meta HTTP-Equiv='Content-Type' Content-Type='text/html; charset=Unicode'>"
    "<Title>Network Device Enrollment Service</Title></Head><Body BgColor=#FFFFFF>"
    "<P> You can obtain the CA certificate and the enrollment challenge password.<P>"
    "<P> The thumbprint (hash value) for the CA certificate is: <B> 4C5A 28F1 9D3B </B> <P>"
    "<P> The enrollment challenge password is: <B> {challenge} </B> <P>"
    "<P> This password can be used only once and will expire within 60 minutes. <P>"
    "</Body></HTML>"
)
CACHE_FULL = "<HTML><Body><P> The password cache is full. <P></Body></HTML>"
NO_PERMISSION = (
    "<HTML><Body><P> You do not have sufficient permission to enroll with SCEP. "
    "Please contact your system administrator. <P></Body></HTML>"
)


@dataclass
class NdesDouble:
    """What the fake ``mscep_admin`` answers, and the Authorization headers it got."""

    body: bytes = b""
    stall: threading.Event | None = None
    seen_authorizations: list[str] = field(default_factory=list)
    url: str = ""


def _handler(double: NdesDouble):
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

    class MscepAdmin(QuietHandler):
        def do_GET(self) -> None:
            double.seen_authorizations.append(self.headers.get("Authorization", ""))
            if double.stall is not None:
                double.stall.wait(timeout=30)  # answers only once the test is over
                return
            if self.headers.get("Authorization") != expected:
                self.reply(b"", "text/plain", 401, WWW_Authenticate='Basic realm="ndes"')
                return
            self.reply(double.body, "text/html")

    return MscepAdmin


@pytest.fixture
def ndes() -> Iterator[NdesDouble]:
    """The NDES double on a free port of 127.0.0.1, answering the challenge page."""
    double = NdesDouble(body=PAGE.format(challenge=CHALLENGE).encode("utf-16"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(double))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    double.url = f"http://127.0.0.1:{httpd.server_address[1]}/certsrv/mscep_admin/"
    yield double
    if double.stall is not None:
        double.stall.set()
    httpd.shutdown()
    httpd.server_close()
