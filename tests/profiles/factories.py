"""``force_*`` helpers for profiles: real rows with random names."""

from apps.devices.choices import Platform
from apps.devices.models import Device, DeviceGroup, UserAttributes
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Profile, ProfilePayload
from tests.factories import force_user, random_name


def force_device(*, owner=None, upn: str = "", **fields) -> Device:
    """A device owned by ``owner`` (a new user by default) with a serial number and UDID."""
    owner = owner if owner is not None else force_user()
    if upn:
        UserAttributes.objects.update_or_create(user=owner, defaults={"upn": upn})
    fields.setdefault("name", random_name("device"))
    fields.setdefault("platform", Platform.MACOS)
    fields.setdefault("serial_number", "C02ZK1ABMD6T")
    fields.setdefault("udid", "00008103-001A2B3C4D5E6F70")
    return Device.objects.create(owner=owner, **fields)


def force_group(*devices: Device) -> DeviceGroup:
    group = DeviceGroup.objects.create(name=random_name("group"))
    group.devices.set(devices)
    return group


def force_profile(**fields) -> Profile:
    name = random_name("profile")
    fields.setdefault("name", name)
    fields.setdefault("identifier", f"com.example.{name}")
    return Profile.objects.create(**fields)


def force_payload(profile: Profile, kind: str, **fields) -> ProfilePayload:
    """A payload of ``kind`` appended to ``profile``; ``full_clean`` checks what it needs."""
    fields.setdefault("display_name", f"{PayloadKind(kind).label} {random_name('payload')}")
    fields.setdefault("position", profile.payloads.count())
    payload = ProfilePayload(profile=profile, kind=kind, **fields)
    payload.full_clean()
    payload.save()
    return payload
