"""An https SCEP URL whose server certificate comes from a private CA: trusted through the
CA server's TLS trust bundle, refused with a clear error without it.

The external CA here is a small TLS server (``http.server`` wrapped in ``ssl``, with a
throwaway CA and server certificate made by the test) that answers GetCACaps and
GetCACert: what is under test is the TLS trust, not SCEP."""

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apps.pki import crypto
from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.models import CertificateAuthority
from tests.api.helpers import token_client
from tests.factories import make_key, self_signed_ca
from tests.http_doubles import QuietHandler
from tests.scep.upstream import CAPS, offline_external_ca

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class TlsScepServer:
    url: str
    tls_ca_pem: str  # the private CA that issued the server's TLS certificate
    scep_ca: x509.Certificate  # what its GetCACert answers


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _tls_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("Zylker TLS test root"))
        .issuer_name(_name("Zylker TLS test root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _server_certificate(
    ca_key, ca_certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _handler(scep_ca: x509.Certificate) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if "operation=GetCACert" in self.path:
                body = scep_ca.public_bytes(serialization.Encoding.DER)
                content_type = "application/x-x509-ca-cert"
            else:
                body, content_type = CAPS, "text/plain"
            self.reply(body, content_type)

    return Handler


@pytest.fixture
def tls_scep_server(tmp_path: Path) -> Iterator[TlsScepServer]:
    ca_key, ca_certificate = _tls_ca()
    key, certificate = _server_certificate(ca_key, ca_certificate)
    (tmp_path / "server.pem").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    scep_ca = self_signed_ca(make_key())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(scep_ca))
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield TlsScepServer(
        url=f"https://127.0.0.1:{httpd.server_address[1]}/certsrv/mscep/mscep.dll",
        tls_ca_pem=crypto.cert_pem(ca_certificate),
        scep_ca=scep_ca,
    )
    httpd.shutdown()
    httpd.server_close()


def test_with_the_trust_bundle_the_https_scep_url_is_reached(tls_scep_server):
    ca = offline_external_ca(tls_scep_server.url, tls_trust_bundle_pem=tls_scep_server.tls_ca_pem)

    upstream = upstream_for(ca)

    assert upstream.ca_caps() == ["POSTPKIOperation", "SHA-256", "AES", "SCEPStandard"]
    assert upstream.fetch_ca_certificates() == [tls_scep_server.scep_ca]


def test_without_the_trust_bundle_the_error_says_the_certificate_is_not_trusted(
    tls_scep_server,
):
    ca = offline_external_ca(tls_scep_server.url)

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).ca_caps()

    assert str(caught.value) == (
        f"CA server {ca.name}: the TLS certificate of 127.0.0.1 is not trusted (unable to get "
        "local issuer certificate); add its CA to the TLS trust bundle"
    )
    assert caught.value.timed_out is False


def test_another_ca_in_the_trust_bundle_does_not_make_it_trusted(tls_scep_server):
    stranger = crypto.cert_pem(self_signed_ca(make_key()))
    ca = offline_external_ca(tls_scep_server.url, tls_trust_bundle_pem=stranger)

    with pytest.raises(UpstreamError) as caught:
        upstream_for(ca).ca_caps()

    assert "the TLS certificate of 127.0.0.1 is not trusted" in str(caught.value)


def test_the_api_adds_an_https_ca_server_through_its_trust_bundle(alice, tls_scep_server):
    api_client = token_client(alice)
    body = {
        "name": "EJBCA",
        "slug": "ejbca",
        "scep_url": tls_scep_server.url,
        "scep_challenge_type": "none",
        "tls_trust_bundle_pem": tls_scep_server.tls_ca_pem,
    }

    without = api_client.post(
        "/api/v1/ca-servers/", {**body, "tls_trust_bundle_pem": ""}, format="json"
    )
    created = api_client.post("/api/v1/ca-servers/", body, format="json")

    assert without.status_code == 400
    assert "is not trusted" in without.json()["scep_url"][0]
    assert created.status_code == 201, created.content
    ca = CertificateAuthority.objects.get()
    assert ca.certificate == tls_scep_server.scep_ca
    report = api_client.post(f"/api/v1/ca-servers/{ca.pk}/test-connection/").json()
    assert (report["ok"], report["error"]) == (True, "")
