"""Capture what micromdm's ``scepclient`` (Debian package ``scep``) really sends.

Run from the checkout: ``.venv/bin/python -m tests.scep.capture_scepclient``. It makes a
test CA and RA, serves GetCACaps/GetCACert/PKIOperation on 127.0.0.1 with a throwaway
HTTP server (answering with real CertReps from ``apps.scep.protocol`` so that scepclient
completes and a renewal can follow), runs scepclient, and writes the request bodies,
the keys needed to read them and scepclient's logs to ``tests/scep/testdata/``.
Overwrites earlier captures; the unit tests' expected values must then be updated.
"""

import datetime
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from http.server import ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from apps.scep.protocol import PKIStatus, server
from tests.http_doubles import QuietHandler

TESTDATA = Path(__file__).parent / "testdata"
CHALLENGE = "capture-challenge-1"
CAPS_POST = server.get_ca_caps(renewal=True, next_ca_cert=False)
CAPS_GET = "SHA-256\nAES\nRenewal\n"  # no POSTPKIOperation nor SCEPStandard: GET


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmcerts capture"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(subject, public_key, issuer, issuer_key, *, ca: bool, days: int):
    now = datetime.datetime.now(datetime.UTC)
    usage = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    usage.update(
        {"key_cert_sign": ca, "crl_sign": ca, "digital_signature": True, "key_encipherment": not ca}
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


class Authority:
    """The test CA and its RA, issuing whatever a valid request asks for."""

    def __init__(self) -> None:
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _certificate(
            _name("Capture CA"), self.ca_key.public_key(), _name("Capture CA"), self.ca_key,
            ca=True, days=3650,
        )  # fmt: skip
        self.ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ra = _certificate(
            _name("Capture RA"), self.ra_key.public_key(), self.ca.subject, self.ca_key,
            ca=False, days=3650,
        )  # fmt: skip
        self.bodies: list[tuple[str, bytes, str]] = []

    def answer(self, body: bytes) -> bytes:
        request = server.parse_pki_message(
            body, ra_certificate=self.ra, ra_key=self.ra_key, allow_single_des=True
        )
        issued = _certificate(
            request.csr.subject, request.csr.public_key(), self.ca.subject, self.ca_key,
            ca=False, days=30,
        )  # fmt: skip
        return server.build_cert_rep(
            request_info=request,
            status=PKIStatus.SUCCESS,
            ra_certificate=self.ra,
            ra_key=self.ra_key,
            certificates=[issued],
        )


def handler_for(authority: Authority, caps: dict):
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            query = urllib.parse.urlsplit(self.path).query
            params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
            operation = params.get("operation")
            if operation == "GetCACaps":
                self.reply(caps["value"].encode(), "text/plain")
            elif operation == "GetCACert":
                body = server.ca_certs_response(authority.ra, [authority.ca])
                self.reply(body, "application/x-x509-ca-ra-cert")
            else:
                raw = params["message"]
                self._pki_operation(server.decode_get_message(raw), "GET", raw)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self._pki_operation(body, "POST", "")

        def _pki_operation(self, body: bytes, method: str, raw: str) -> None:
            authority.bodies.append((method, body, raw))
            self.reply(authority.answer(body), "application/x-pki-message")

    return Handler


def _scepclient(url: str, workdir: Path, *extra: str) -> str:
    command = [
        shutil.which("scepclient") or "scepclient",
        "-server-url", url, "-private-key", str(workdir / "client.key"),
        "-cn", "capture-device-1", "-organization", "mdmcerts", "-ou", "capture",
        "-debug", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise SystemExit(f"scepclient failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main() -> None:
    authority = Authority()
    caps = {"value": CAPS_POST}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(authority, caps))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/scep/capture/pkiclient.exe"
    logs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        logs.append(_scepclient(url, workdir, "-challenge", CHALLENGE))
        logs.append(_scepclient(url, workdir))  # client.pem now exists: RenewalReq
        client_key = (workdir / "client.key").read_bytes()
        caps["value"] = CAPS_GET
        get_dir = workdir / "get"
        get_dir.mkdir()
        logs.append(_scepclient(url, get_dir, "-challenge", CHALLENGE))
        get_key = (get_dir / "client.key").read_bytes()
    httpd.shutdown()
    _write(authority, logs, client_key, get_key)


def _write(authority: Authority, logs: list[str], client_key: bytes, get_key: bytes) -> None:
    (TESTDATA / "ca.pem").write_bytes(_pem(authority.ca))
    (TESTDATA / "ra.pem").write_bytes(_pem(authority.ra))
    (TESTDATA / "ra.key").write_bytes(_pem(authority.ra_key))
    (TESTDATA / "scepclient_client.key").write_bytes(client_key)
    (TESTDATA / "scepclient_get_client.key").write_bytes(get_key)
    names = ["scepclient_pkcsreq_post.der", "scepclient_renewalreq_post.der"]
    for name, (_, body, _) in zip(names, authority.bodies[:2], strict=True):
        (TESTDATA / name).write_bytes(body)
    (TESTDATA / "scepclient_pkcsreq_get.txt").write_text(authority.bodies[2][2] + "\n")
    (TESTDATA / "scepclient.log").write_text("\n".join(logs))
    print(f"wrote {len(authority.bodies)} captures to {TESTDATA}")


if __name__ == "__main__":
    main()
