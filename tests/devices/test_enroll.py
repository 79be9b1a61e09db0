"""Enrolling devices with enrollment codes (``POST enroll`` and ``services.enroll``)."""

import datetime
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from apps.audit.services import history_for
from apps.core.models import hash_token
from apps.devices import services
from apps.devices.models import Device, DeviceToken, EnrollmentCode
from tests.devices.conftest import DeviceApi

pytestmark = pytest.mark.django_db
FACTS = {"name": "dana-laptop", "platform": "linux", "serial_number": "SN123", "udid": ""}


def test_a_device_enrolls_with_a_code_and_gets_a_token_shown_once(dana, group):
    row, code = services.create_enrollment_code(name="laptops", owner=dana, group=group)

    response = DeviceApi().post("enroll", {"code": code, **FACTS, "wifi_mac": "aa:bb:cc"})

    assert response.status_code == 201
    answer = response.json()
    assert sorted(answer) == ["device_id", "token"]
    device = Device.objects.get(pk=answer["device_id"])
    assert (device.name, device.platform, device.serial_number, device.wifi_mac) == (
        "dana-laptop",
        "linux",
        "SN123",
        "aa:bb:cc",
    )
    assert (device.owner, device.status, list(device.groups.all())) == (dana, "enrolled", [group])
    token = DeviceToken.objects.get(device=device)
    assert token.key_hash == hash_token(answer["token"])
    assert answer["token"] not in str(DeviceToken.objects.values_list())
    row.refresh_from_db()
    assert row.uses == 1 and row.state() == "used up"
    assert history_for(device).get().action == "create"


def test_the_code_is_stored_as_its_hash_only(dana):
    row, code = services.create_enrollment_code(name="laptops", owner=dana)

    assert row.code_hash == hash_token(code) and row.prefix == code[:8]
    assert code not in str(EnrollmentCode.objects.values_list())


def test_a_multi_use_code_enrolls_several_devices_up_to_its_limit(dana, group):
    _, code = services.create_enrollment_code(name="lab", owner=dana, group=group, max_uses=2)

    first = DeviceApi().post("enroll", {"code": code, **FACTS})
    second = DeviceApi().post("enroll", {"code": code, **FACTS, "serial_number": "SN124"})
    third = DeviceApi().post("enroll", {"code": code, **FACTS, "serial_number": "SN125"})

    assert (first.status_code, second.status_code, third.status_code) == (201, 201, 400)
    assert third.json() == {
        "detail": "this enrollment code was used already; ask your administrator for a new one"
    }
    assert sorted(Device.objects.values_list("serial_number", flat=True)) == ["SN123", "SN124"]
    assert group.devices.count() == 2


def test_an_unlimited_code_keeps_enrolling(dana):
    _, code = services.create_enrollment_code(name="kiosk", owner=dana, max_uses=None)

    for serial in ("A", "B", "C"):
        assert DeviceApi().post("enroll", {"code": code, **FACTS, "serial_number": serial})
    assert Device.objects.count() == 3


def test_a_code_without_group_or_owner_enrolls_an_ungrouped_unowned_device():
    _, code = services.create_enrollment_code(name="loose")

    response = DeviceApi().post("enroll", {"code": code, **FACTS})

    device = Device.objects.get(pk=response.json()["device_id"])
    assert (device.owner, device.groups.count()) == (None, 0)


def test_a_code_expires(dana, time_machine):
    _, code = services.create_enrollment_code(
        name="soon", owner=dana, expires_at=timezone.now() + datetime.timedelta(hours=1)
    )
    time_machine.move_to(timezone.now() + datetime.timedelta(hours=2))

    with pytest.raises(services.EnrollmentRefused, match="has expired"):
        services.enroll(code=code, facts=FACTS)
    assert not Device.objects.exists()


def test_a_revoked_code_enrolls_nothing(dana):
    row, code = services.create_enrollment_code(name="gone", owner=dana, max_uses=None)
    assert services.revoke_enrollment_code(code=row) is True
    assert services.revoke_enrollment_code(code=row) is False

    with pytest.raises(services.EnrollmentRefused, match="was revoked"):
        services.enroll(code=code, facts=FACTS)
    row.refresh_from_db()
    assert (row.uses, Device.objects.count(), DeviceToken.objects.count()) == (0, 0, 0)
    assert [event.action for event in history_for(row)] == ["update", "create"]


def test_invalid_facts_create_nothing_and_keep_the_code(dana):
    row, code = services.create_enrollment_code(name="once", owner=dana)

    response = DeviceApi().post("enroll", {"code": code, "name": "", "platform": "beos"})

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "name: This field may not be blank." in detail
    assert 'platform: "beos" is not a valid choice.' in detail
    row.refresh_from_db()
    assert (row.uses, Device.objects.count()) == (0, 0)


def test_a_code_that_may_never_be_used_is_refused_at_creation(dana):
    with pytest.raises(ValidationError):
        services.create_enrollment_code(name="zero", owner=dana, max_uses=0)
    assert not EnrollmentCode.objects.exists()


def test_enroll_attempts_are_throttled_per_address(settings):
    settings.MDMCERTS_DEVICE_ENROLL_RATE = "3/minute"
    body = {"code": "no-such-code", **FACTS}

    answers = [DeviceApi().post("enroll", body).status_code for _ in range(4)]
    other = DeviceApi(remote_addr="192.0.2.99").post("enroll", body)

    assert answers == [400, 400, 400, 429]
    assert other.status_code == 400
    assert "throttled" in DeviceApi().post("enroll", body).json()["detail"]


def test_a_one_time_code_read_as_usable_is_still_used_once(dana, monkeypatch):
    """What a device that lost the race sees: it read the code as usable before another
    device used it; the conditional update refuses it all the same."""
    _, code = services.create_enrollment_code(name="race", owner=dana)
    services.enroll(code=code, facts=FACTS)
    monkeypatch.setattr(EnrollmentCode, "state", lambda self, now=None: "usable")

    with pytest.raises(services.EnrollmentRefused, match="used already"):
        services.enroll(code=code, facts={**FACTS, "serial_number": "late"})
    assert list(Device.objects.values_list("serial_number", flat=True)) == ["SN123"]
    assert EnrollmentCode.objects.get().uses == 1


@pytest.mark.django_db(transaction=True)
def test_a_one_time_code_presented_by_many_devices_at_once_enrolls_one(dana):
    if connection.vendor == "sqlite":
        pytest.skip("the in-memory SQLite test database locks tables instead of waiting")
    _, code = services.create_enrollment_code(name="race", owner=dana)
    racers = 8
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []

    def present(index: int) -> None:
        try:
            barrier.wait()
            services.enroll(code=code, facts={**FACTS, "serial_number": f"SN{index}"})
            outcomes.append("enrolled")
        except services.EnrollmentRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=present, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["enrolled"] + ["refused"] * (racers - 1)
    assert Device.objects.count() == 1 and DeviceToken.objects.count() == 1
    assert EnrollmentCode.objects.get().uses == 1
