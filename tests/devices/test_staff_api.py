"""The staff REST API for devices, device groups and enrollment codes."""

import pytest

from apps.audit.services import history_for
from apps.core.models import hash_token
from apps.devices import services
from apps.devices.models import Device, DeviceGroup, EnrollmentCode
from tests.api.helpers import token_client
from tests.devices.conftest import DeviceApi

pytestmark = pytest.mark.django_db
DEVICES = "/api/v1/devices/"
GROUPS = "/api/v1/device-groups/"
CODES = "/api/v1/enrollment-codes/"


@pytest.fixture
def laptop(enroll, wifi_profile):
    laptop = enroll()
    laptop.checkin({"installed_certificates": [{"fingerprint_sha256": "ab" * 32}]})
    return laptop


def test_bob_reads_devices_with_deliveries_and_inventory(bob, laptop, wifi_profile, group, dana):
    api = token_client(bob)

    listing = api.get(DEVICES)
    detail = api.get(f"{DEVICES}{laptop.device.pk}/")

    assert listing.status_code == 200 and listing.json()["count"] == 1
    body = detail.json()
    assert (body["name"], body["owner"], body["platform"], body["status"]) == (
        "laptop SN-DANA-1",
        dana.pk,
        "linux",
        "enrolled",
    )
    assert body["groups"] == [group.pk]
    [row] = body["deliveries"]
    assert (row["profile"], row["profile_name"], row["status"], row["delivered_version"]) == (
        wifi_profile.pk,
        wifi_profile.name,
        "delivered",
        1,
    )
    assert body["installed_certificates"] == [
        {
            "fingerprint_sha256": "ab" * 32,
            "subject": "",
            "issuer": "",
            "not_after": None,
            "certificate": None,
            "issued_by_mdmcerts": False,
            "first_seen_at": body["installed_certificates"][0]["first_seen_at"],
            "last_seen_at": body["installed_certificates"][0]["last_seen_at"],
        }
    ]
    assert listing.json()["results"][0] == body


def test_alice_renames_a_device_and_gives_it_another_owner(alice, laptop, erin):
    response = token_client(alice).patch(
        f"{DEVICES}{laptop.device.pk}/",
        {"name": "erin-laptop", "owner": erin.pk, "platform": "windows", "status": "wiped"},
        format="json",
    )

    assert response.status_code == 200
    device = Device.objects.get()
    assert (device.name, device.owner, device.platform, device.status) == (
        "erin-laptop",
        erin,
        "linux",
        "enrolled",
    )
    event = history_for(device).first()
    assert event.actor == alice
    assert event.changes["name"] == ["laptop SN-DANA-1", "erin-laptop"]


def test_bob_and_charlie_cannot_change_devices(bob, charlie, laptop):
    for user in (bob, charlie):
        api = token_client(user)
        assert api.patch(f"{DEVICES}{laptop.device.pk}/", {"name": "x"}).status_code == 403
        for action in ("scan", "redeliver", "unenroll"):
            assert api.post(f"{DEVICES}{laptop.device.pk}/{action}/").status_code == 403
    assert token_client(charlie).get(DEVICES).status_code == 403
    device = Device.objects.get()
    assert (device.name, device.status, device.scan_requested) == (
        "laptop SN-DANA-1",
        "enrolled",
        False,
    )


def test_alice_scans_redelivers_and_unenrolls(alice, laptop):
    api = token_client(alice)
    url = f"{DEVICES}{laptop.device.pk}/"

    scanned = api.post(f"{url}scan/")
    redelivered = api.post(f"{url}redeliver/")
    unenrolled = api.post(f"{url}unenroll/")
    again = api.post(f"{url}unenroll/")

    assert scanned.status_code == 200 and scanned.json()["scan_requested"] is True
    assert redelivered.json() == {"redelivered": 1}
    assert unenrolled.status_code == 200 and unenrolled.json()["status"] == "unenrolled"
    assert unenrolled.json()["deliveries"][0]["status"] == "removal_pending"
    assert again.status_code == 409
    assert laptop.api.post("checkin").status_code == 401


def test_devices_cannot_be_created_or_deleted(alice, laptop):
    api = token_client(alice)

    assert api.post(DEVICES, {"name": "x", "platform": "linux"}).status_code == 405
    assert api.delete(f"{DEVICES}{laptop.device.pk}/").status_code == 405


def test_alice_manages_groups_and_their_members(alice, enroll, group):
    first, second = enroll("SN-1"), enroll("SN-2", group=None)
    api = token_client(alice)

    created = api.post(
        GROUPS, {"name": "Lab", "description": "test lab", "devices": [second.device.pk]}
    )
    moved = api.patch(f"{GROUPS}{group.pk}/", {"devices": []}, format="json")
    renamed = api.patch(f"{GROUPS}{group.pk}/", {"name": "Old laptops"}, format="json")
    deleted = api.delete(f"{GROUPS}{created.json()['id']}/")

    assert created.status_code == 201
    assert created.json()["devices"] == [second.device.pk]
    assert moved.json()["devices"] == [] and renamed.json()["devices"] == []
    assert deleted.status_code == 204
    assert list(DeviceGroup.objects.values_list("name", flat=True)) == ["Old laptops"]
    assert [e.changes.get("devices") for e in history_for(group)] == [
        None,
        [[first.device.pk], []],
    ]
    assert Device.objects.count() == 2


def test_bob_reads_groups_but_cannot_write(bob, group):
    api = token_client(bob)

    assert api.get(GROUPS).json()["results"][0]["name"] == group.name
    assert api.post(GROUPS, {"name": "bob's"}).status_code == 403
    assert api.delete(f"{GROUPS}{group.pk}/").status_code == 403
    assert DeviceGroup.objects.count() == 1


def test_alice_creates_a_code_that_is_shown_once(alice, dana, group):
    api = token_client(alice)

    created = api.post(
        CODES, {"name": "lab", "owner": dana.pk, "group": group.pk, "max_uses": None}, format="json"
    )
    listing = api.get(CODES)

    assert created.status_code == 201
    body = created.json()
    code = body.pop("code")
    row = EnrollmentCode.objects.get()
    assert row.code_hash == hash_token(code)
    assert (body["owner"], body["group"], body["max_uses"], body["state"]) == (
        dana.pk,
        group.pk,
        None,
        "usable",
    )
    assert "code" not in listing.json()["results"][0]
    assert code not in listing.content.decode()
    assert api.get(f"{CODES}{row.pk}/").json() == {**body, "uses": 0}
    assert (
        DeviceApi().post("enroll", {"code": code, "name": "a", "platform": "linux"}).status_code
        == 201
    )
    assert api.get(f"{CODES}{row.pk}/").json()["uses"] == 1
    assert history_for(row).get().actor == alice


def test_a_code_for_no_use_is_refused(alice):
    response = token_client(alice).post(CODES, {"name": "zero", "max_uses": 0}, format="json")

    assert response.status_code == 400
    assert not EnrollmentCode.objects.exists()


def test_alice_revokes_a_code_once(alice, dana):
    row, code = services.create_enrollment_code(name="lab", owner=dana)
    api = token_client(alice)

    revoked = api.post(f"{CODES}{row.pk}/revoke/")
    again = api.post(f"{CODES}{row.pk}/revoke/")

    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert again.status_code == 409
    assert (
        DeviceApi().post("enroll", {"code": code, "name": "a", "platform": "linux"}).status_code
        == 400
    )


def test_bob_cannot_create_or_revoke_codes(bob, dana):
    row, _ = services.create_enrollment_code(name="lab", owner=dana)
    api = token_client(bob)

    assert api.get(CODES).status_code == 200
    assert api.post(CODES, {"name": "bob's"}).status_code == 403
    assert api.post(f"{CODES}{row.pk}/revoke/").status_code == 403
    assert list(EnrollmentCode.objects.values_list("name", "revoked_at")) == [("lab", None)]
