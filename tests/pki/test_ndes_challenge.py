"""Dynamic challenges from NDES's ``mscep_admin`` page, through ``ScepUpstream.challenge``,
against the NDES double of ``tests/ndes_double.py`` (NDES cannot run here)."""

import base64
import threading

import pytest

from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.choices import CAKind, ExternalChallengeType
from apps.pki.models import CertificateAuthority
from tests import ndes_double
from tests.factories import force_ca
from tests.ndes_double import (
    CACHE_FULL,
    CHALLENGE,
    NO_PERMISSION,
    PAGE,
    PASSWORD,
    USERNAME,
    NdesDouble,
)

pytestmark = pytest.mark.django_db
ndes = ndes_double.ndes  # fixture: the stand-in for NDES's mscep_admin page


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
