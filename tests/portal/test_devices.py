""" "My devices" and the overview: each device's name, platform, status, last check-in and
profiles, a failed delivery with its error, and the upload a user-provided payload waits
for (with a link to upload it). Deliveries are made by real check-ins."""

import datetime

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.certificates.choices import IdentityPurpose
from apps.certificates.uploads import store_user_identity
from apps.devices.services import checkin
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Delivery
from apps.profiles.services import assign
from tests.portal.bundles import P12_PASSWORD, make_p12
from tests.portal.conftest import signed_in
from tests.profiles.factories import force_device, force_payload, force_profile

pytestmark = pytest.mark.django_db

DEVICES = "/portal/devices/"


@pytest.fixture
def smime_profile():
    """A profile with alice's S/MIME signing certificate in it (any platform: JSON)."""
    profile = force_profile(name="Zylker S/MIME", platform="any")
    force_payload(
        profile,
        PayloadKind.USER_PROVIDED,
        display_name="Signing certificate",
        user_identity_purpose=IdentityPurpose.SMIME_SIGNING,
    )
    return profile


@pytest.fixture
def checked_in_laptop(alice_laptop, smime_profile):
    """alice's laptop, assigned the S/MIME profile, checked in once (before any upload)."""
    assign(profile=smime_profile, device=alice_laptop)
    with time_machine.travel(datetime.datetime(2026, 3, 4, 9, 30, tzinfo=datetime.UTC)):
        checkin(device=alice_laptop)
    return alice_laptop


def test_alice_sees_her_device_with_its_facts(alice_client, alice_laptop, bob):
    force_device(owner=bob, name="bob-phone")
    alice_laptop.last_checkin_at = datetime.datetime(2026, 3, 4, 9, 30, tzinfo=datetime.UTC)
    alice_laptop.save()

    response = alice_client.get(DEVICES)

    assert response.status_code == 200
    assert [s.device for s in response.context["devices"]] == [alice_laptop]
    page = response.content.decode()
    for shown in ("alice-laptop", "Linux", "Enrolled", "4 Mar 2026, 09:30", "SN-A1"):
        assert shown in page
    assert "bob-phone" not in page
    assert "No profiles are assigned to this device." in page


def test_a_device_that_never_checked_in_says_so(alice_client, alice_laptop):
    page = alice_client.get(DEVICES).content.decode()

    assert "never" in page


def test_a_profile_missing_her_upload_shows_the_error_and_a_link_to_upload(
    alice, alice_client, checked_in_laptop
):
    row = Delivery.objects.get(device=checked_in_laptop)
    assert row.status == "failed"

    response = alice_client.get(DEVICES)

    [summary] = response.context["devices"]
    assert [d.pk for d in summary.failed] == [row.pk]
    assert [(m.purpose, m.expired_on) for m in summary.missing] == [("smime_signing", None)]
    page = response.content.decode()
    assert "Zylker S/MIME" in page
    assert escape(row.error) in page
    assert "Alice Adams has not uploaded an S/MIME signing certificate" in row.error
    assert f'href="{reverse("portal:upload")}?purpose=smime_signing"' in page


def test_the_overview_asks_for_the_missing_upload(alice_client, checked_in_laptop):
    response = alice_client.get(reverse("portal:home"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Needs your attention" in page
    assert "Upload your S/MIME signing certificate." in page
    assert f'href="{reverse("portal:upload")}?purpose=smime_signing"' in page


def test_once_uploaded_the_profile_installs_and_nothing_is_missing(
    alice, alice_client, checked_in_laptop
):
    store_user_identity(
        user=alice, purpose="smime_signing", data=make_p12(), password=P12_PASSWORD, actor=alice
    )
    checkin(device=checked_in_laptop)

    response = alice_client.get(DEVICES)

    [summary] = response.context["devices"]
    assert summary.missing == []
    assert [d.status for d in summary.deliveries] == ["delivered"]
    assert "Missing:" not in response.content.decode()
    assert "Needs your attention" not in alice_client.get(reverse("portal:home")).content.decode()


def test_an_expired_upload_counts_as_missing(alice, checked_in_laptop):
    identity = store_user_identity(
        user=alice,
        purpose="smime_signing",
        data=make_p12(days=30),
        password=P12_PASSWORD,
        actor=alice,
    )

    with time_machine.travel(timezone.now() + datetime.timedelta(days=40)):
        response = signed_in(alice).get(DEVICES)

    [summary] = response.context["devices"]
    assert [(m.purpose, m.expired_on) for m in summary.missing] == [
        ("smime_signing", identity.certificate.not_after)
    ]
    assert "Upload a new one" in response.content.decode()


def test_someone_elses_missing_upload_is_not_hers(alice_client, alice_laptop, bob, smime_profile):
    bobs = force_device(owner=bob, name="bob-laptop", platform="linux")
    assign(profile=smime_profile, device=bobs)
    checkin(device=bobs)

    response = alice_client.get(DEVICES)

    assert [s.missing for s in response.context["devices"]] == [[]]
    assert "Bob" not in response.content.decode()
