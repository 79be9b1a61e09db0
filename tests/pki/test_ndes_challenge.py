"""Dynamic challenges from NDES's ``mscep_admin`` page, through ``ScepUpstream.challenge``.

``NdesDouble`` stands in for NDES: NDES is a proprietary Windows Server role that cannot
run here, so a small ``http.server`` thread serves what its ``mscep_admin`` page answers
(the challenge page in UTF-16 or UTF-8, its "password cache is full" and "no permission"
pages, a 401 for wrong credentials, or no answer in time)."""

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.choices import CAKind, ExternalChallengeType
from apps.pki.models import CertificateAuthority
from tests.factories import force_ca

pytestmark = pytest.mark.django_db

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

    class MscepAdmin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            double.seen_authorizations.append(self.headers.get("Authorization", ""))
            if double.stall is not None:
                double.stall.wait(timeout=30)  # answers only once the test is over
                return
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="ndes"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(double.body)))
            self.end_headers()
            self.wfile.write(double.body)

        def log_message(self, *args) -> None:
            pass

    return MscepAdmin


@pytest.fixture
def ndes() -> Iterator[NdesDouble]:
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


def ndes_ca(ndes: NdesDouble, *, password: str = PASSWORD, **fields) -> CertificateAuthority:
    """An external CA whose challenges come from the NDES double (its certificate is any
    CA's: only the challenge is fetched here)."""
    ca = force_ca()
    ca.kind = CAKind.SCEP
    ca.scep_url = "http://127.0.0.1:9/certsrv/mscep/mscep.dll"
    ca.scep_challenge_type = ExternalChallengeType.DYNAMIC
    ca.ndes_challenge_url = ndes.url
    ca.ndes_username = USERNAME
    ca.set_secret("ndes_password", password)
    for name, value in fields.items():
        setattr(ca, name, value)
    ca.save()
    return ca


def test_it_fetches_a_challenge_from_a_utf16_mscep_admin_page(ndes):
    ca = ndes_ca(ndes)

    assert upstream_for(ca).challenge() == CHALLENGE
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert ndes.seen_authorizations == [f"Basic {expected}"]


def test_it_reads_a_utf8_page_too(ndes):
    ndes.body = PAGE.format(challenge=CHALLENGE).encode()

    assert upstream_for(ndes_ca(ndes)).challenge() == CHALLENGE


def test_a_wrong_password_is_refused_with_a_clear_error_that_does_not_hold_it(ndes):
    ca = ndes_ca(ndes, password="wrong-password-123")

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).challenge()

    message = str(caught.value)
    assert "NDES refused the credentials" in message
    assert "HTTP 401" in message
    assert "wrong-password-123" not in message


def test_a_page_without_a_challenge_is_a_clear_error(ndes):
    ndes.body = b"<HTML><Body><P>Welcome to IIS</P></Body></HTML>"

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ndes_ca(ndes)).challenge()

    assert "the NDES page holds no enrollment challenge password" in str(caught.value)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (CACHE_FULL, "NDES's password cache is full"),
        (NO_PERMISSION, "no permission to enroll with SCEP"),
    ],
)
def test_ndes_refusal_pages_give_their_own_errors(ndes, page, expected):
    ndes.body = page.encode("utf-16")

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ndes_ca(ndes)).challenge()

    assert expected in str(caught.value)


def test_a_challenge_of_another_length_than_configured_is_refused(ndes):
    ca = ndes_ca(ndes, ndes_challenge_length=8)

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).challenge()

    assert "the NDES challenge has 16 characters where the CA server's SCEP challenge " in str(
        caught.value
    )


def test_a_slow_ndes_gives_a_timeout_error(ndes):
    ndes.stall = threading.Event()
    ca = ndes_ca(ndes, scep_request_timeout_seconds=1)

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).challenge()

    assert f"{ndes.url} did not answer within 1 s" in str(caught.value)


def test_the_ndes_password_is_stored_encrypted(ndes):
    ca = ndes_ca(ndes)

    stored = CertificateAuthority.objects.values_list("ndes_password", flat=True).get(pk=ca.pk)
    assert stored.startswith("mdmc1:")
    assert PASSWORD not in stored
