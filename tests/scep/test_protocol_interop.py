"""Interop with an independent implementation: our client module against micromdm's
``scepserver`` (Debian package ``scep``) run as a subprocess on 127.0.0.1, and
micromdm's ``scepclient`` against our server functions behind a throwaway HTTP server.

scepserver 2.1 signs its CertReps with SHA-1 and encrypts them with single DES-CBC,
whatever the request used, so these tests read its answers with
``allow_single_des=True``.
"""

import shutil
import subprocess
import threading
import urllib.request
import uuid
from http.server import ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization

from apps.scep.protocol import (
    ContentCipher,
    FailInfo,
    MessageType,
    PKIStatus,
    ProtocolError,
    client,
)
from tests import openssl
from tests.scep.capture_scepclient import CAPS_POST, Authority, handler_for
from tests.scep.test_protocol_server import make_csr, rsa_key
from tests.scepserver import MISSING, running_scepserver

CHALLENGE = "interop-challenge-1"
TIMEOUT = 10


@pytest.fixture(scope="module")
def scepserver(tmp_path_factory):
    """A running scepserver with a fresh 2048-bit CA; yields (base URL, CA certificate)."""
    workdir = tmp_path_factory.mktemp("scepserver")
    with running_scepserver(workdir, challenge=CHALLENGE) as server:
        yield server.url, server.ca_certificate


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 -- local
        return response.read()


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(  # noqa: S310 -- a local test server
        url, data=body, headers={"Content-Type": "application/x-pki-message"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
        assert response.headers["Content-Type"] == "application/x-pki-message"
        return response.read()


def _enroll(base_url: str, *, challenge: str, cipher: ContentCipher):
    """GetCACert, then a PKCSReq by POST; returns (key, signer, nonce, ca certs, reply)."""
    ca_certs = client.parse_ca_certs(_get(f"{base_url}?operation=GetCACert"))
    key = rsa_key()
    csr = make_csr(key, common_name=f"interop-{uuid.uuid4().hex}", challenge=challenge)
    signer = client.self_signed_signer(key, csr.subject)
    der, nonce = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=client.pkcs_req_payload(csr),
        transaction_id=client.transaction_id_for(key.public_key()),
        signer_certificate=signer,
        signer_key=key,
        recipient_certificate=client.select_recipient(ca_certs),
        content_cipher=cipher,
    )
    reply = _post(f"{base_url}?operation=PKIOperation", der)
    return key, signer, nonce, ca_certs, reply


def test_scepserver_is_installed():
    # A plain failure (not only fixture errors) when the interop partner is missing.
    assert shutil.which("scepserver") is not None, MISSING


def test_get_ca_cert_returns_scepservers_ca(scepserver):
    base_url, ca = scepserver

    assert client.parse_ca_certs(_get(f"{base_url}?operation=GetCACert")) == [ca]


@pytest.mark.parametrize(
    "cipher", [ContentCipher.AES_128_CBC, ContentCipher.AES_256_CBC, ContentCipher.DES_EDE3_CBC]
)
def test_scepserver_issues_a_certificate_for_our_pkcsreq(scepserver, cipher, tmp_path):
    base_url, ca = scepserver

    key, signer, nonce, ca_certs, reply = _enroll(base_url, challenge=CHALLENGE, cipher=cipher)
    result = client.parse_cert_rep(
        reply, recipient_key=key, recipient_certificate=signer,
        ra_certificates=ca_certs, allow_single_des=True,
    )  # fmt: skip

    assert result.status is PKIStatus.SUCCESS
    assert result.recipient_nonce == nonce
    assert result.transaction_id == client.transaction_id_for(key.public_key())
    (issued,) = result.certificates
    assert issued.public_key() == key.public_key()
    assert issued.subject == signer.subject
    pem = issued.public_bytes(serialization.Encoding.PEM).decode()
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    verified = openssl.verify(pem, root_pem=ca_pem, tmp=tmp_path)
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_scepservers_single_des_answer_is_refused_unless_allowed(scepserver):
    base_url, _ = scepserver
    key, signer, _, ca_certs, reply = _enroll(
        base_url, challenge=CHALLENGE, cipher=ContentCipher.AES_128_CBC
    )

    with pytest.raises(ProtocolError) as caught:
        client.parse_cert_rep(
            reply, recipient_key=key, recipient_certificate=signer, ra_certificates=ca_certs
        )

    assert (caught.value.fail_info, caught.value.reason) == (
        FailInfo.BAD_ALG,
        "single DES is not accepted",
    )


def test_scepserver_answers_a_wrong_challenge_with_failure(scepserver):
    base_url, _ = scepserver

    key, signer, nonce, ca_certs, reply = _enroll(
        base_url, challenge="not-the-challenge", cipher=ContentCipher.AES_256_CBC
    )
    result = client.parse_cert_rep(
        reply, recipient_key=key, recipient_certificate=signer, ra_certificates=ca_certs
    )

    assert result.status is PKIStatus.FAILURE
    assert result.fail_info is FailInfo.BAD_REQUEST
    assert result.recipient_nonce == nonce
    assert result.transaction_id == client.transaction_id_for(key.public_key())
    assert (result.certificates, result.crl_der) == ([], None)


def test_scepclient_enrolls_against_the_protocol_package(tmp_path):
    binary = shutil.which("scepclient")
    assert binary is not None, "micromdm's scepclient is required: install the Debian package scep"
    authority = Authority()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(authority, {"value": CAPS_POST}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/scep/interop/pkiclient.exe"
    command = [
        binary, "-server-url", url, "-private-key", str(tmp_path / "client.key"),
        "-cn", "interop-device", "-challenge", CHALLENGE,
    ]  # fmt: skip
    try:
        run = subprocess.run(command, capture_output=True, timeout=60, check=False)
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    ((method, _, _),) = authority.bodies
    assert method == "POST"
    issued = (tmp_path / "client.pem").read_text()
    ca_pem = authority.ca.public_bytes(serialization.Encoding.PEM).decode()
    verified = openssl.verify(issued, root_pem=ca_pem, tmp=tmp_path)
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
