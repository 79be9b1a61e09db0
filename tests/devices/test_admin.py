"""Devices, groups and enrollment codes in the console: alice (superuser) acts, bob
(view only) looks, charlie (no staff access) is sent to the login page."""

import pytest

from apps.audit.services import history_for
from apps.devices import services
from apps.devices.models import Device, DeviceGroup, DeviceToken, EnrollmentCode
from apps.pki import crypto
from apps.profiles.models import Delivery
from tests.devices.conftest import DeviceApi, scep_enroll, scep_payload_of

pytestmark = pytest.mark.django_db
DEVICES = "/admin/devices/device/"
GROUPS = "/admin/devices/devicegroup/"
CODES = "/admin/devices/enrollmentcode/"


@pytest.fixture
def laptop(enroll, wifi_profile):
    """Enrolled, given the Wi-Fi profile, enrolled over SCEP, inventory reported."""
    laptop = enroll()
    payload = scep_payload_of(laptop.checkin()["install"][0])
    [issued] = scep_enroll(payload).certificates
    laptop.checkin({"installed_certificates": [{"pem": crypto.cert_pem(issued)}]})
    return laptop


def act(client, action: str, devices: list[Device]):
    return client.post(
        DEVICES, {"action": action, "_selected_action": [d.pk for d in devices]}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_bob_sees_the_device_with_its_inventory_profiles_and_history(client, bob, laptop):
    client.force_login(bob)
    certificate = laptop.device.certificates.get()

    listing = client.get(DEVICES)
    page = client.get(f"{DEVICES}{laptop.device.pk}/change/")
    history = client.get(f"{DEVICES}{laptop.device.pk}/history/")

    assert listing.status_code == page.status_code == history.status_code == 200
    html = page.content.decode()
    assert "O=Zylker,OU=dana,CN=SN-DANA-1" in html  # the installed certificate's subject
    assert f'/admin/certificates/certificate/{certificate.pk}/change/">yes</a>' in html
    assert laptop.device.deliveries.get().profile.name in html
    assert certificate.serial[:16] in html  # the delivery shows its certificate
    assert "1 / 1" in html  # delivered version / current version
    assert f"{DEVICES}{laptop.device.pk}/history/" in html
    assert "enrolled with enrollment code" in history.content.decode()


def test_alice_asks_for_a_scan_and_redelivers(client, alice, laptop):
    client.force_login(alice)

    scanned = act(client, "scan_now", [laptop.device])
    redelivered = act(client, "redeliver_profiles", [laptop.device])

    assert messages_of(scanned) == ["1 device(s) will report their inventory."]
    assert messages_of(redelivered) == ["1 profile(s) will be delivered again."]
    answer = laptop.checkin()
    assert answer["scan_requested"] is True
    assert [i["generation"] for i in answer["install"]] == [2]
    assert history_for(laptop.device).filter(actor=alice).count() == 2


def test_alice_unenrolls_and_marks_wiped(client, alice, laptop, enroll):
    other = enroll("SN-DANA-2")
    client.force_login(alice)

    unenrolled = act(client, "unenroll_devices", [laptop.device])
    again = act(client, "unenroll_devices", [laptop.device, other.device])
    wiped = act(client, "mark_wiped", [laptop.device])

    assert messages_of(unenrolled) == ["1 device(s) unenrolled."]
    assert messages_of(again) == ["1 device(s) unenrolled.", "1 device(s) was not enrolled."]
    assert messages_of(wiped) == ["1 device(s) marked wiped."]
    assert dict(Device.objects.values_list("serial_number", "status")) == {
        "SN-DANA-1": "wiped",
        "SN-DANA-2": "unenrolled",
    }
    assert not DeviceToken.objects.filter(revoked_at__isnull=True).exists()
    assert Delivery.objects.get(device=laptop.device).status == "removed"


def test_bob_cannot_run_the_actions(client, bob, laptop):
    client.force_login(bob)

    for action in ("scan_now", "redeliver_profiles", "unenroll_devices", "mark_wiped"):
        act(client, action, [laptop.device])

    device = Device.objects.get()
    assert (device.status, device.scan_requested) == ("enrolled", False)
    assert Delivery.objects.get().generation == 1
    assert not history_for(device).filter(actor=bob).exists()


def test_bob_cannot_change_a_device(client, bob, laptop):
    client.force_login(bob)

    response = client.post(f"{DEVICES}{laptop.device.pk}/change/", {"name": "bob's now"})

    assert response.status_code == 403
    assert Device.objects.get().name == "laptop SN-DANA-1"


def test_charlie_is_sent_to_the_login_page(client, charlie, laptop):
    client.force_login(charlie)

    for url in (DEVICES, GROUPS, CODES):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_alice_creates_an_enrollment_code_and_sees_it_once(client, alice, dana, group):
    client.force_login(alice)

    created = client.post(
        f"{CODES}add/",
        {
            "name": "lab",
            "owner": dana.pk,
            "group": group.pk,
            "max_uses": "2",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        follow=True,
    )

    shown = "Enrollment code created. Copy it now, it is not shown again: "
    [code] = [m.removeprefix(shown) for m in messages_of(created) if m.startswith(shown)]
    row = EnrollmentCode.objects.get()
    assert (row.owner, row.group, row.max_uses, row.prefix) == (dana, group, 2, code[:8])
    assert code not in client.get(f"{CODES}{row.pk}/change/").content.decode()
    assert code not in client.get(CODES).content.decode()
    assert history_for(row).get().actor == alice
    enrolled = DeviceApi().post("enroll", {"code": code, "name": "lab-1", "platform": "linux"})
    assert enrolled.status_code == 201
    assert "1 / 2" in client.get(CODES).content.decode()


def test_alice_revokes_codes(client, alice, dana):
    row, code = services.create_enrollment_code(name="lab", owner=dana)
    client.force_login(alice)

    response = client.post(
        CODES, {"action": "revoke_codes", "_selected_action": [row.pk]}, follow=True
    )

    assert messages_of(response) == ["1 enrollment code(s) revoked."]
    row.refresh_from_db()
    assert row.revoked_at is not None and row.state() == "revoked"
    assert (
        DeviceApi().post("enroll", {"code": code, "name": "x", "platform": "linux"}).status_code
        == 400
    )
    assert client.get(f"{CODES}?state=revoked").context["cl"].result_list[0] == row


def test_bob_can_neither_create_nor_revoke_codes(client, bob, dana):
    row, _ = services.create_enrollment_code(name="lab", owner=dana)
    client.force_login(bob)

    added = client.post(f"{CODES}add/", {"name": "bob's", "max_uses": "1"})
    client.post(CODES, {"action": "revoke_codes", "_selected_action": [row.pk]})

    assert added.status_code == 403
    assert list(EnrollmentCode.objects.values_list("name", "revoked_at")) == [("lab", None)]


def test_alice_edits_group_members_and_the_history_shows_them(client, alice, enroll, group):
    first, second = enroll("SN-1"), enroll("SN-2", group=None)
    client.force_login(alice)

    response = client.post(
        f"{GROUPS}{group.pk}/change/",
        {"name": group.name, "description": "", "devices": [second.device.pk]},
    )

    assert response.status_code == 302
    assert list(group.devices.all()) == [second.device]
    event = history_for(group).get()
    assert event.changes["devices"] == [[first.device.pk], [second.device.pk]]
    listing = client.get(GROUPS)
    assert listing.context["cl"].result_list[0].member_count == 1
    assert DeviceGroup.objects.count() == 1
