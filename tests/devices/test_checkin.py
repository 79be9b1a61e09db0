"""``POST checkin`` and ``POST ack``: which profiles a device gets, once per version and
generation, how they are rendered for its platform, and their removal."""

import base64
import plistlib

import pytest
from django.db.models import F

from apps.enrollment.models import Challenge
from apps.profiles import delivery
from apps.profiles.models import Delivery, Profile, ProfileAssignment
from tests.devices.conftest import force_profile, scep_payload_of

pytestmark = pytest.mark.django_db


def bump_version(profile: Profile) -> None:
    Profile.objects.filter(pk=profile.pk).update(version=F("version") + 1)


def test_an_assigned_profile_is_delivered_once_with_a_fresh_challenge(enroll, wifi_profile):
    laptop = enroll()

    first = laptop.checkin({"facts": {"name": "dana-laptop"}})
    second = laptop.checkin()

    assert first["scan_requested"] is False and first["remove"] == []
    [item] = first["install"]
    assert {k: v for k, v in item.items() if k != "profile"} == {
        "profile_id": wifi_profile.pk,
        "identifier": wifi_profile.identifier,
        "uuid": str(wifi_profile.uuid),
        "version": 1,
        "generation": 1,
        "format": "json",
    }
    assert [p["kind"] for p in item["profile"]["payloads"]] == [
        "scep",
        "trusted_certificate",
        "wifi",
    ]
    scep = scep_payload_of(item)
    assert scep["subject"] == [["O", "Zylker"], ["OU", "dana"], ["CN", "SN-DANA-1"]]
    assert scep["subject_alt_names"] == [
        ["rfc822", "dana@zylker.com"],
        ["dns", "SN-DANA-1.devices.zylker.com"],
    ]
    challenge = Challenge.objects.get()
    assert scep["challenge"].startswith(challenge.public_id)
    assert (challenge.device, challenge.user, challenge.profile) == (
        laptop.device,
        laptop.device.owner,
        wifi_profile,
    )
    assert second == {"scan_requested": False, "install": [], "remove": []}
    row = Delivery.objects.get()
    assert (row.status, row.delivered_version, row.delivered_generation) == ("delivered", 1, 1)
    laptop.device.refresh_from_db()
    assert laptop.device.name == "dana-laptop" and laptop.device.last_checkin_at is not None


def test_a_changed_profile_is_delivered_again(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin()
    bump_version(wifi_profile)

    again = laptop.checkin()

    assert [(i["version"], i["generation"]) for i in again["install"]] == [(2, 1)]
    assert Challenge.objects.count() == 2
    assert laptop.checkin()["install"] == []


def test_redeliver_sends_the_profile_again_with_the_next_generation(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin()

    assert delivery.redeliver(laptop.device) == 1
    assert Delivery.objects.get().status == "pending"
    again = laptop.checkin()

    assert [(i["version"], i["generation"]) for i in again["install"]] == [(1, 2)]
    challenges = list(Challenge.objects.order_by("pk").values_list("public_id", flat=True))
    assert len(challenges) == 2
    assert scep_payload_of(again["install"][0])["challenge"].startswith(challenges[1])


def test_an_ack_records_the_install_or_the_failure(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin()
    base = {"profile_id": wifi_profile.pk, "version": 1, "generation": 1}

    failed = laptop.api.post("ack", {**base, "status": "failed", "error": "SCEP: badRequest"})
    row = Delivery.objects.get()
    assert failed.json() == {"status": "failed"}
    assert (row.status, row.error) == ("failed", "SCEP: badRequest")
    installed = laptop.api.post("ack", {**base, "status": "installed"})
    row.refresh_from_db()
    assert installed.json() == {"status": "installed"}
    assert (row.status, row.error) == ("installed", "")
    assert row.acknowledged_at is not None
    assert laptop.checkin()["install"] == []


def test_a_profile_no_longer_assigned_is_removed(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin()
    ProfileAssignment.objects.filter(profile=wifi_profile).delete()

    answer = laptop.checkin()
    again = laptop.checkin()
    ack = laptop.api.post("ack", {"profile_id": wifi_profile.pk, "status": "removed"})

    expected = {
        "profile_id": wifi_profile.pk,
        "identifier": wifi_profile.identifier,
        "uuid": str(wifi_profile.uuid),
    }
    assert (answer["install"], answer["remove"]) == ([], [expected])
    assert again["remove"] == [expected]  # until the device says it removed it
    assert ack.status_code == 200 and ack.json() == {"status": "removed"}
    assert laptop.checkin()["remove"] == []
    assert Delivery.objects.get().status == "removed"


def test_a_profile_assigned_again_after_its_removal_is_delivered_again(enroll, wifi_profile, group):
    laptop = enroll()
    laptop.checkin()
    ProfileAssignment.objects.filter(profile=wifi_profile).delete()
    laptop.checkin()
    laptop.api.post("ack", {"profile_id": wifi_profile.pk, "status": "removed"})
    ProfileAssignment.objects.create(profile=wifi_profile, group=group)

    answer = laptop.checkin()

    assert [(i["profile_id"], i["generation"]) for i in answer["install"]] == [(wifi_profile.pk, 2)]


def test_a_profile_never_delivered_is_simply_dropped_when_unassigned(enroll, template):
    laptop = enroll()
    profile = force_profile(template=template)
    ProfileAssignment.objects.create(profile=profile, device=laptop.device)
    delivery.sync_deliveries(laptop.device)
    ProfileAssignment.objects.filter(profile=profile).delete()

    answer = laptop.checkin()

    assert (answer["install"], answer["remove"]) == ([], [])
    assert Delivery.objects.get().status == "removed"


def test_a_device_assignment_and_a_group_assignment_make_one_delivery(enroll, wifi_profile):
    laptop = enroll()
    ProfileAssignment.objects.create(profile=wifi_profile, device=laptop.device)

    answer = laptop.checkin()

    assert [i["profile_id"] for i in answer["install"]] == [wifi_profile.pk]
    assert Delivery.objects.count() == 1


def test_apple_devices_get_a_mobileconfig_and_only_they_get_apple_profiles(enroll, template, group):
    apple_only = force_profile(template=template, platform="apple")
    ProfileAssignment.objects.create(profile=apple_only, group=group)
    linux = enroll("SN-LINUX")
    mac = enroll("SN-MAC", platform="macos")

    linux_answer = linux.checkin()
    mac_answer = mac.checkin()

    assert linux_answer["install"] == []
    [item] = mac_answer["install"]
    assert item["format"] == "mobileconfig" and "profile" not in item
    document = plistlib.loads(base64.b64decode(item["mobileconfig"]))
    assert document["PayloadIdentifier"] == apple_only.identifier
    [scep] = document["PayloadContent"]
    challenge = Challenge.objects.get(device=mac.device)
    assert scep["PayloadContent"]["Challenge"].startswith(challenge.public_id)
    assert list(Delivery.objects.values_list("device", flat=True)) == [mac.device.pk]


def test_a_profile_whose_variables_cannot_be_filled_is_not_delivered_and_says_why(
    enroll, wifi_profile, dana
):
    dana.email = ""
    dana.save()
    laptop = enroll()

    answer = laptop.checkin()

    assert answer["install"] == []
    row = Delivery.objects.get()
    assert row.status == "failed"
    assert row.error.startswith(
        "$EMAIL$ (user's email address) has no value for this device or user (in "
    )
    assert row.delivered_version is None
    assert not Challenge.objects.exists()  # the challenge minted for it went with it


def test_a_failed_rendering_is_tried_again_once_the_value_exists(enroll, wifi_profile, dana):
    dana.email = ""
    dana.save()
    laptop = enroll()
    laptop.checkin()
    dana.email = "dana@zylker.com"
    dana.save()

    answer = laptop.checkin()

    assert [i["profile_id"] for i in answer["install"]] == [wifi_profile.pk]
    row = Delivery.objects.get()
    assert (row.status, row.error) == ("delivered", "")


def test_render_delivery_run_twice_sends_once(enroll, wifi_profile):
    laptop = enroll()
    delivery.sync_deliveries(laptop.device)
    row = delivery.deliveries_to_send(laptop.device).get()

    first = delivery.render_delivery(row)
    second = delivery.render_delivery(row)

    assert first is not None and second is None
    assert Challenge.objects.count() == 1


def test_sync_deliveries_run_twice_changes_nothing_more(enroll, wifi_profile):
    laptop = enroll()

    delivery.sync_deliveries(laptop.device)
    delivery.sync_deliveries(laptop.device)

    assert list(Delivery.objects.values_list("status", "generation")) == [("pending", 1)]
