"""The SCEP proxy (/scep-proxy/<token>/…): a device enrolls with an external SCEP CA
through mdmcerts. The token names the device, the template and the profile, and expires;
every request checks it again, and a refused one reaches no CA.

Enrollments relay to micromdm's scepserver (``tests/scepserver.py``); refusals and a
failing CA use a stand-in that only counts requests (``tests/scep/upstream.py``).
Personas: dana's MacBook enrolls through the proxy (``tests/scep/conftest.py``); charlie's
laptop is targeted by nothing.
"""

import base64
import datetime

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core import signing
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.devices.choices import DeviceStatus
from apps.enrollment.choices import ChallengeType, ExternalDelivery
from apps.pki.choices import KeyAlgorithm
from apps.profiles.choices import PayloadKind
from apps.profiles.models import ProfileAssignment
from apps.profiles.services import assign, unassign
from apps.scep.protocol import ContentCipher, MessageType, PKIStatus, constants
from apps.scep.protocol import client as protocol_client
from apps.scep.proxy import SIGNING_SALT, TOKEN_LIFETIME, proxy_token
from tests import openssl
from tests import scepserver as scep_ca
from tests.factories import force_template
from tests.profiles.factories import force_device, force_payload, force_profile
from tests.scep import upstream
from tests.scep.client import RAW, Identity, UrlTransport, get_query, make_csr, rsa_key
from tests.scep.upstream import offline_external_ca
from tests.scepserver import external_ca_for

# Fixtures of other modules, used here by name.
counting_upstream = upstream.counting_upstream
scepserver, start_scepserver = scep_ca.scepserver, scep_ca.start_scepserver

pytestmark = pytest.mark.django_db

PKI_MESSAGE = "application/x-pki-message"
SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"


def proxied_template(ca, **fields):
    fields.setdefault("external_delivery", ExternalDelivery.PROXY)
    return force_template(
        ca=ca,
        subject=SUBJECT,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        **fields,
    )


def assigned_profile(template, device):
    profile = force_profile(platform="any")
    force_payload(profile, PayloadKind.SCEP, display_name="Proxied identity", template=template)
    assign(profile=profile, device=device)
    return profile


@pytest.fixture
def counted(counting_upstream, device):
    """dana's MacBook holds a profile whose template enrolls through the proxy with the
    counting stand-in; ``path`` is its proxy path."""
    template = proxied_template(offline_external_ca(counting_upstream.url))
    profile = assigned_profile(template, device)
    token = proxy_token(device=device, template=template, profile=profile)
    return {
        "upstream": counting_upstream,
        "template": template,
        "profile": profile,
        "token": token,
        "path": f"/scep-proxy/{token}/pkiclient.exe",
    }


@pytest.fixture
def relayed(scepserver, device):
    """The same, relayed to scepserver."""
    template = proxied_template(external_ca_for(scepserver))
    profile = assigned_profile(template, device)
    token = proxy_token(device=device, template=template, profile=profile)
    return {"template": template, "profile": profile, "path": f"/scep-proxy/{token}/pkiclient.exe"}


def get(path: str, query: str):
    return Client().generic("GET", f"{path}?{query}")


def post(path: str, body: bytes, query: str = "operation=PKIOperation"):
    return Client().generic("POST", f"{path}?{query}", body, content_type=PKI_MESSAGE)


def pkcs_req(ca_certificate, *, challenge: str, common_name: str = "SN-PROXY-1"):
    """(key, signer, nonce, der) of a PKCSReq to scepserver's CA."""
    key = rsa_key()
    subject = x509.Name.from_rfc4514_string(f"CN={common_name}")
    csr = make_csr(key, subject=subject, challenge=challenge)
    signer = Identity.self_signed(key, csr.subject)
    der, nonce = protocol_client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=protocol_client.pkcs_req_payload(csr),
        transaction_id=protocol_client.transaction_id_for(key.public_key()),
        signer_certificate=signer.certificate,
        signer_key=key,
        recipient_certificate=ca_certificate,
        content_cipher=ContentCipher.AES_256_CBC,
    )
    return key, signer, nonce, der


def read_cert_rep(body: bytes, key, signer, ca_certificate):
    return protocol_client.parse_cert_rep(
        body, recipient_key=key, recipient_certificate=signer.certificate,
        ra_certificates=[ca_certificate], allow_single_des=True,
    )  # fmt: skip


def proxy_events():
    return list(AuditEvent.objects.filter(message__contains="relayed to").order_by("pk"))


# --- relaying ----------------------------------------------------------------------------


def test_get_ca_caps_is_relayed_from_the_external_ca(relayed, scepserver):
    response = get(relayed["path"], "operation=GetCACaps")

    direct = UrlTransport(scepserver.url).get("", "operation=GetCACaps")
    assert (response.status_code, response["Content-Type"]) == (200, direct.content_type)
    assert response.content == direct.body
    assert "POSTPKIOperation" in direct.text


def test_get_ca_cert_is_relayed_with_the_external_cas_certificate(relayed, scepserver):
    response = get(relayed["path"], "operation=GetCACert")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-x509-ca-cert"
    assert protocol_client.parse_ca_certs(response.content) == [scepserver.ca_certificate]


def test_a_pkcsreq_posted_through_the_proxy_is_issued_by_the_external_ca(
    relayed, scepserver, device, tmp_path
):
    key, signer, nonce, der = pkcs_req(scepserver.ca_certificate, challenge=scepserver.challenge)

    response = post(relayed["path"], der)

    assert (response.status_code, response["Content-Type"]) == (200, PKI_MESSAGE)
    result = read_cert_rep(response.content, key, signer, scepserver.ca_certificate)
    assert result.status is PKIStatus.SUCCESS
    assert result.recipient_nonce == nonce
    (issued,) = result.certificates
    assert issued.public_key() == key.public_key()
    pem = issued.public_bytes(serialization.Encoding.PEM).decode()
    check = openssl.verify(pem, root_pem=scepserver.ca_pem_path.read_text(), tmp=tmp_path)
    assert check.returncode == 0, check.stderr
    (event,) = proxy_events()
    assert (event.action, event.object_id, event.actor_repr) == ("issue", str(device.pk), "system")
    assert event.message == (
        f"SCEP PKCS_REQ relayed to {relayed['template'].ca} for request template "
        f"{relayed['template']} (profile {relayed['profile']}): SUCCESS; "
        f"transaction {protocol_client.transaction_id_for(key.public_key())}"
    )
    assert base64.b64encode(der).decode()[:40] not in str(event.changes) + event.message


def test_a_pkcsreq_sent_by_get_with_a_raw_message_is_relayed(relayed, scepserver):
    key, signer, _, der = pkcs_req(scepserver.ca_certificate, challenge=scepserver.challenge)

    response = get(relayed["path"], get_query(der, RAW))

    assert response.status_code == 200
    result = read_cert_rep(response.content, key, signer, scepserver.ca_certificate)
    assert result.status is PKIStatus.SUCCESS
    assert scepserver.issued_count() == 1


def test_the_external_cas_refusal_is_relayed_and_audited_as_a_failure(relayed, scepserver):
    key, signer, _, der = pkcs_req(scepserver.ca_certificate, challenge="not-the-secret")

    response = post(relayed["path"], der)

    assert response.status_code == 200
    result = read_cert_rep(response.content, key, signer, scepserver.ca_certificate)
    assert result.status is PKIStatus.FAILURE
    (event,) = proxy_events()
    assert event.action == "issue_failed"
    assert ": FAILURE; transaction " in event.message
    assert scepserver.issued_count() == 0


# --- refusals: nothing reaches the CA ----------------------------------------------------


def assert_refused(response, message: str, upstream) -> None:
    assert (response.status_code, response["Content-Type"]) == (403, "text/plain")
    assert response.content.decode() == message
    assert upstream.hits == 0
    assert proxy_events() == []


def test_a_token_that_is_not_one_is_refused(counted):
    response = get("/scep-proxy/not-a-token/pkiclient.exe", "operation=GetCACaps")

    assert_refused(response, "this SCEP proxy URL is not valid", counted["upstream"])


def test_a_tampered_token_is_refused(counted, device):
    # Another device's claims with the signature of dana's token.
    _, _, signature = counted["token"].partition(":")
    other = {"d": device.pk + 1, "t": counted["template"].pk, "p": counted["profile"].pk}
    forged = signing.dumps({**other, "e": 4102444800}, salt=SIGNING_SALT)
    tampered = f"{forged.partition(':')[0]}:{signature}"

    response = post(f"/scep-proxy/{tampered}/pkiclient.exe", b"0\x00")

    assert_refused(response, "this SCEP proxy URL is not valid", counted["upstream"])


def test_a_token_signed_for_another_purpose_is_refused(counted, device):
    claims = signing.loads(counted["token"], salt=SIGNING_SALT)
    foreign = signing.dumps(claims, salt="another.salt")

    response = get(f"/scep-proxy/{foreign}/pkiclient.exe", "operation=GetCACert")

    assert_refused(response, "this SCEP proxy URL is not valid", counted["upstream"])


def test_an_expired_token_is_refused(counted):
    later = timezone.now() + TOKEN_LIFETIME + datetime.timedelta(minutes=1)

    with time_machine.travel(later, tick=False):
        response = get(counted["path"], "operation=GetCACaps")

    assert_refused(
        response,
        "this SCEP proxy URL has expired; the device gets a new one with its profile",
        counted["upstream"],
    )


def test_a_token_still_valid_just_before_it_expires_is_relayed(counted):
    later = timezone.now() + TOKEN_LIFETIME - datetime.timedelta(minutes=1)

    with time_machine.travel(later, tick=False):
        response = get(counted["path"], "operation=GetCACaps")

    assert response.status_code == 200
    assert counted["upstream"].requests == [("GET", "/certsrv/mscep/mscep.dll?operation=GetCACaps")]


def test_a_token_of_a_device_the_profile_does_not_target_is_refused(counted, charlie):
    laptop = force_device(owner=charlie, name="charlie-laptop", platform="linux")
    token = proxy_token(device=laptop, template=counted["template"], profile=counted["profile"])

    response = get(f"/scep-proxy/{token}/pkiclient.exe", "operation=GetCACaps")

    assert_refused(
        response, "the profile of this SCEP proxy URL no longer targets its device",
        counted["upstream"],
    )  # fmt: skip


def test_a_token_whose_profile_was_unassigned_is_refused(counted, device):
    unassign(assignment=ProfileAssignment.objects.get(profile=counted["profile"], device=device))

    response = post(counted["path"], b"0\x00")

    assert_refused(
        response, "the profile of this SCEP proxy URL no longer targets its device",
        counted["upstream"],
    )  # fmt: skip


def test_a_token_of_an_unenrolled_device_is_refused(counted, device):
    device.status = DeviceStatus.UNENROLLED
    device.save()

    response = get(counted["path"], "operation=GetCACert")

    assert_refused(
        response, "the device of this SCEP proxy URL is not enrolled", counted["upstream"]
    )


def test_a_token_of_a_template_no_longer_proxied_is_refused(counted):
    template = counted["template"]
    template.external_delivery = ExternalDelivery.DELEGATE
    template.save()

    response = get(counted["path"], "operation=GetCACaps")

    assert_refused(
        response,
        f"request template {template} no longer enrolls through the SCEP proxy",
        counted["upstream"],
    )


def test_a_token_whose_profile_dropped_the_template_is_refused(counted):
    counted["profile"].payloads.all().delete()

    response = get(counted["path"], "operation=GetCACaps")

    assert_refused(
        response,
        "the profile of this SCEP proxy URL no longer carries request template "
        f"{counted['template']}",
        counted["upstream"],
    )


# --- limits and bad input ------------------------------------------------------------------


def test_a_body_over_64_kib_is_refused_with_413_and_not_relayed(counted):
    response = post(counted["path"], b"0" * (constants.MAX_MESSAGE_SIZE + 1))

    assert (response.status_code, response.content) == (413, b"the message is too large")
    assert counted["upstream"].hits == 0


def test_a_get_message_over_the_limit_is_refused_with_414_and_not_relayed(counted):
    message = "A" * (constants.MAX_MESSAGE_SIZE * 2)

    response = get(counted["path"], f"operation=PKIOperation&message={message}")

    assert (response.status_code, response.content) == (414, b"the message is too large")
    assert counted["upstream"].hits == 0


def test_a_body_that_is_no_pki_message_gets_400_and_is_not_relayed(counted):
    response = post(counted["path"], b"this is not DER")

    assert response.status_code == 400
    assert response.content.decode().startswith("not a SCEP pkiMessage")
    assert counted["upstream"].hits == 0
    assert proxy_events() == []


def test_an_unknown_operation_gets_400_and_is_not_relayed(counted):
    response = get(counted["path"], "operation=GetEverything")

    assert (response.status_code, response.content) == (400, b"unknown or missing operation")
    assert counted["upstream"].hits == 0


def test_any_path_suffix_reaches_the_proxy(counted):
    response = get(f"/scep-proxy/{counted['token']}/cgi-bin/pkiclient.exe", "operation=GetCACaps")

    assert response.status_code == 200
    assert counted["upstream"].hits == 1


# --- a failing CA ----------------------------------------------------------------------------


def test_a_ca_that_is_down_gives_502_with_a_message(device):
    template = proxied_template(offline_external_ca("http://127.0.0.1:9/scep"))
    profile = assigned_profile(template, device)
    token = proxy_token(device=device, template=template, profile=profile)

    response = get(f"/scep-proxy/{token}/pkiclient.exe", "operation=GetCACaps")

    assert (response.status_code, response["Content-Type"]) == (502, "text/plain")
    assert response.content.decode() == (
        f"the CA server did not answer: CA server {template.ca}: cannot reach "
        "http://127.0.0.1:9/scep: Connection refused"
    )


def test_a_pkioperation_to_a_ca_that_is_down_is_audited_as_not_answered(device, scepserver):
    template = proxied_template(offline_external_ca("http://127.0.0.1:9/scep"))
    profile = assigned_profile(template, device)
    token = proxy_token(device=device, template=template, profile=profile)
    _, _, _, der = pkcs_req(scepserver.ca_certificate, challenge="x")

    response = post(f"/scep-proxy/{token}/pkiclient.exe", der)

    assert response.status_code == 502
    (event,) = proxy_events()
    assert event.action == "issue_failed"
    assert ": not answered: CA server " in event.message


def test_a_ca_answering_500_gives_502(counted):
    counted["upstream"].mode = "error"

    response = get(counted["path"], "operation=GetCACert")

    assert (response.status_code, response.content) == (
        502,
        b"the CA server answered HTTP 500",
    )
    assert counted["upstream"].hits == 1


def test_a_ca_that_never_answers_gives_up_at_its_timeout(counted):
    counted["upstream"].mode = "silent"
    ca = counted["template"].ca
    ca.scep_request_timeout_seconds = 1
    ca.save()

    response = get(counted["path"], "operation=GetCACaps")

    assert response.status_code == 504
    assert response.content.decode().endswith("did not answer within 1 s")
    assert counted["upstream"].hits == 1
