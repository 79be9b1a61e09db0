"""Device lifecycle services: unenroll (by the device or staff), mark wiped, scan and
redeliver, each audited."""

import pytest

from apps.audit.services import history_for
from apps.devices import services
from apps.devices.models import Device, DeviceToken
from apps.profiles.models import Delivery, ProfileAssignment
from tests.devices.conftest import force_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def laptop(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin()
    return laptop


def test_a_device_unenrolls_itself(laptop):
    response = laptop.api.post("unenroll")

    assert (response.status_code, response.json()) == (200, {"status": "unenrolled"})
    device = Device.objects.get()
    assert device.status == "unenrolled"
    assert DeviceToken.objects.get().revoked_at is not None
    assert list(Delivery.objects.values_list("status", flat=True)) == ["removal_pending"]
    event = history_for(device).first()
    assert (event.action, event.message, event.changes["status"]) == (
        "update",
        "unenrolled",
        ["enrolled", "unenrolled"],
    )


def test_unenrolling_twice_changes_nothing_more(laptop, alice):
    assert services.unenroll(device=laptop.device, actor=alice) is True
    events = history_for(laptop.device).count()

    assert services.unenroll(device=laptop.device, actor=alice) is False
    assert history_for(laptop.device).count() == events


def test_a_wiped_device_holds_nothing_and_cannot_check_in(laptop, alice):
    assert services.mark_wiped(device=laptop.device, actor=alice) is True

    device = Device.objects.get()
    assert device.status == "wiped"
    assert list(Delivery.objects.values_list("status", flat=True)) == ["removed"]
    assert laptop.api.post("checkin").status_code == 401
    assert history_for(device).first().message == "marked wiped"
    assert history_for(device).first().actor == alice
    assert services.mark_wiped(device=laptop.device) is False


def test_an_unenrolled_device_can_be_marked_wiped(laptop):
    services.unenroll(device=laptop.device)

    assert services.mark_wiped(device=laptop.device) is True
    assert list(Delivery.objects.values_list("status", flat=True)) == ["removed"]


def test_a_scan_is_asked_for_once(laptop):
    services.request_scan(device=laptop.device)

    assert laptop.checkin()["scan_requested"] is True
    assert laptop.checkin()["scan_requested"] is True  # until the device sends its inventory
    assert laptop.checkin({"installed_certificates": []})["scan_requested"] is False


def test_redelivering_profiles_is_audited(laptop, alice):
    assert services.redeliver_profiles(device=laptop.device, actor=alice) == 1

    event = history_for(laptop.device).first()
    assert (event.actor, event.message) == (alice, "1 profile(s) to be delivered again")
    assert [i["generation"] for i in laptop.checkin()["install"]] == [2]


def test_facts_a_device_reports_are_audited_when_they_change(laptop):
    laptop.checkin({"facts": {"name": "laptop SN-DANA-1"}})
    quiet = history_for(laptop.device).count()

    laptop.checkin({"facts": {"name": "dana-mbp", "wifi_mac": "aa:bb"}})

    event = history_for(laptop.device).first()
    assert history_for(laptop.device).count() == quiet + 1
    assert event.changes == {"name": ["laptop SN-DANA-1", "dana-mbp"], "wifi_mac": ["", "aa:bb"]}
    assert event.message == "facts reported by the device at check-in"


def test_a_device_moving_to_an_apple_platform_gets_its_apple_profiles(laptop, template, group):
    apple_only = force_profile(template=template, platform="apple")
    ProfileAssignment.objects.create(profile=apple_only, group=group)
    assert laptop.checkin()["install"] == []

    answer = laptop.checkin({"facts": {"platform": "macos"}})

    assert [(i["profile_id"], i["format"]) for i in answer["install"]] == [
        (apple_only.pk, "mobileconfig")
    ]
