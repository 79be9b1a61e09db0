"""Editing profiles: every change to a profile, its payloads or its assignments increments
the version and is audited; refused edits change nothing."""

import uuid

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.audit.services import history_for, snapshot
from apps.pki.choices import KeyAlgorithm
from apps.profiles.choices import ProfilePlatform
from apps.profiles.models import Delivery, Profile, ProfileAssignment, ProfilePayload
from apps.profiles.services import (
    ProfileInUse,
    assign,
    delete_profile,
    save_profile,
    unassign,
)
from tests.profiles.factories import force_group, force_profile

pytestmark = pytest.mark.django_db


def state(profile: Profile) -> tuple:
    """What a refused edit must leave unchanged."""
    fresh = Profile.objects.get(pk=profile.pk)
    return (
        snapshot(fresh),
        list(fresh.payloads.values_list("uuid", "kind", "display_name", "position")),
        AuditEvent.objects.count(),
    )


def payload_items(profile: Profile) -> list[dict]:
    """The profile's payloads as ``save_profile`` takes them."""
    return [
        {
            "uuid": p.uuid,
            "kind": p.kind,
            "display_name": p.display_name,
            "template": p.template,
            "ca": p.ca,
            "identity": p.identity.uuid if p.identity else None,
            "ssid": p.ssid,
            "wifi_security": p.wifi_security,
            "trusted_server_names": p.trusted_server_names,
        }
        for p in profile.payloads.select_related("template", "ca", "identity")
    ]


def test_a_new_profile_is_version_1_and_its_creation_is_audited(alice, scep_template):
    profile = Profile(name="Corporate Wi-Fi", identifier="com.zylker.wifi")
    identity = uuid.uuid4()

    save_profile(
        profile=profile,
        before=None,
        payloads=[
            {
                "uuid": identity,
                "kind": "scep",
                "display_name": "Identity",
                "template": scep_template,
            },
            {
                "kind": "wifi",
                "display_name": "Corp Wi-Fi",
                "ssid": "ZylkerCorp",
                "wifi_security": "wpa2_enterprise",
                "identity": identity,
            },
        ],
        actor=alice,
    )

    profile.refresh_from_db()
    scep, wifi = profile.payloads.all()
    assert profile.version == 1
    assert (scep.uuid, scep.position, wifi.identity, wifi.position) == (identity, 0, scep, 1)
    event = history_for(profile).get()
    assert (event.action, event.actor, event.changes["version"]) == ("create", alice, [None, 1])
    assert event.changes["payloads"] == [
        None,
        [
            f"SCEP 'Identity': template={scep_template}",
            "Wi-Fi 'Corp Wi-Fi': ssid=ZylkerCorp, hidden_network=False, auto_join=True, "
            "wifi_security=wpa2_enterprise, identity=Identity, trusted_server_names=—",
        ],
    ]


def test_changing_a_field_increments_the_version_and_records_the_diff(wifi_profile, alice):
    before = snapshot(wifi_profile)
    wifi_profile.description = "Staff and guests"

    save_profile(profile=wifi_profile, before=before, actor=alice)

    assert Profile.objects.get(pk=wifi_profile.pk).version == 2 == wifi_profile.version
    event = history_for(wifi_profile).get()
    assert event.action == "update"
    assert event.changes == {
        "description": ["Staff Wi-Fi", "Staff and guests"],
        "version": [1, 2],
    }


def test_saving_without_a_change_keeps_the_version_and_records_nothing(wifi_profile):
    save_profile(
        profile=wifi_profile, before=snapshot(wifi_profile), payloads=payload_items(wifi_profile)
    )

    assert Profile.objects.get(pk=wifi_profile.pk).version == 1
    assert AuditEvent.objects.filter(object_repr=str(wifi_profile)).count() == 0


def test_replacing_payloads_keeps_listed_uuids_and_deletes_the_others(wifi_profile):
    scep, trusted, wifi = wifi_profile.payloads.all()
    items = payload_items(wifi_profile)
    items[2]["ssid"] = "ZylkerStaff"
    del items[1]  # the trusted certificate goes

    save_profile(profile=wifi_profile, before=snapshot(wifi_profile), payloads=items)

    assert list(wifi_profile.payloads.values_list("uuid", "ssid", "position")) == [
        (scep.uuid, "", 0),
        (wifi.uuid, "ZylkerStaff", 1),
    ]
    assert not ProfilePayload.objects.filter(pk=trusted.pk).exists()
    assert wifi_profile.version == 2
    (event,) = history_for(wifi_profile)
    old, new = event.changes["payloads"]
    assert len(old) == 3 and len(new) == 2 and "ssid=ZylkerStaff" in new[1]


def test_invalid_payloads_are_refused_with_every_reason_and_nothing_changes(wifi_profile):
    unchanged = state(wifi_profile)
    items = payload_items(wifi_profile)
    items[2]["ssid"] = ""
    items.append({"kind": "vpn", "display_name": "VPN", "vpn_type": "ikev2"})
    items.append({"kind": "email", "display_name": "Mail", "identity": uuid.uuid4()})

    with pytest.raises(ValidationError) as raised:
        save_profile(profile=wifi_profile, before=snapshot(wifi_profile), payloads=items)

    assert sorted(raised.value.message_dict["payloads"]) == sorted(
        [
            f"Payload 5: identity {items[4]['identity']} is not a payload of this list.",
            "Payload 3 (Wi-Fi): SSID: Required for Wi-Fi payloads.",
            "Payload 4 (VPN): server: Required for VPN payloads.",
            "Payload 4 (VPN): identity certificate: Required for VPN payloads.",
            "Payload 5 (Exchange ActiveSync / email): host: Required for Exchange "
            "ActiveSync / email payloads.",
            "Payload 5 (Exchange ActiveSync / email): email address: Required for Exchange "
            "ActiveSync / email payloads.",
            "Payload 5 (Exchange ActiveSync / email): identity certificate: Required for "
            "Exchange ActiveSync / email payloads.",
        ]
    )
    assert state(wifi_profile) == unchanged


def test_an_identity_must_be_a_scep_or_pkcs12_payload(wifi_profile):
    unchanged = state(wifi_profile)
    items = payload_items(wifi_profile)
    items[2]["identity"] = items[1]["uuid"]  # the trusted certificate

    with pytest.raises(ValidationError, match="must be an identity payload"):
        save_profile(profile=wifi_profile, before=snapshot(wifi_profile), payloads=items)
    assert state(wifi_profile) == unchanged


def test_a_payload_uuid_of_another_profile_is_refused(wifi_profile):
    other = force_profile()
    unchanged = state(other)
    items = payload_items(wifi_profile)[:1]

    with pytest.raises(ValidationError, match="belongs to another profile"):
        save_profile(profile=other, before=snapshot(other), payloads=items)
    assert state(other) == unchanged


def test_an_apple_profile_refuses_a_template_apple_cannot_enroll(wifi_profile, scep_template):
    wifi_profile.platform = ProfilePlatform.ANY
    save_profile(profile=wifi_profile, before=snapshot(wifi_profile))
    scep_template.key_algorithm = KeyAlgorithm.EC_P256
    scep_template.save()
    unchanged = state(wifi_profile)

    wifi_profile.platform = ProfilePlatform.APPLE
    with pytest.raises(ValidationError, match="Apple devices enroll RSA 2048 or 4096 keys only"):
        save_profile(profile=wifi_profile, before=snapshot(Profile.objects.get(pk=wifi_profile.pk)))
    assert state(wifi_profile) == unchanged


def test_assigning_keeps_the_version_and_audits_both_sides(wifi_profile, device, alice):
    """Devices that hold the profile already must not enroll again for a new group."""
    group = force_group(device)

    assignment = assign(profile=wifi_profile, group=group, actor=alice)

    wifi_profile.refresh_from_db()
    assert wifi_profile.version == 1
    assert history_for(assignment).get().action == "create"
    event = history_for(wifi_profile).get()
    assert event.message == f"assigned to group {group}"
    assert event.changes == {"assignments": [[], [f"group {group}"]]}


def test_assigning_twice_or_to_neither_or_both_is_refused_and_changes_nothing(wifi_profile, device):
    group = force_group(device)
    assign(profile=wifi_profile, device=device)
    unchanged = (state(wifi_profile), ProfileAssignment.objects.count())

    with pytest.raises(ValidationError, match="already assigned to device dana-macbook"):
        assign(profile=wifi_profile, device=device)
    with pytest.raises(ValidationError, match="a group or to a device"):
        assign(profile=wifi_profile)
    with pytest.raises(ValidationError, match="a group or to a device"):
        assign(profile=wifi_profile, group=group, device=device)
    assert (state(wifi_profile), ProfileAssignment.objects.count()) == unchanged


def test_unassigning_keeps_the_version_and_is_audited(wifi_profile, device, alice):
    assignment = assign(profile=wifi_profile, device=device)
    assignment_pk = assignment.pk

    unassign(assignment=assignment, actor=alice)

    wifi_profile.refresh_from_db()
    assert wifi_profile.version == 1
    assert not ProfileAssignment.objects.filter(pk=assignment_pk).exists()
    deleted = AuditEvent.objects.get(action="delete", object_id=str(assignment_pk))
    assert deleted.actor == alice
    latest = history_for(wifi_profile).first()
    assert latest.message == f"unassigned from device dana-macbook (#{device.pk})"
    assert latest.changes == {"assignments": [[f"device dana-macbook (#{device.pk})"], []]}


def test_deleting_a_profile_is_audited(wifi_profile, alice):
    pk = wifi_profile.pk

    delete_profile(profile=wifi_profile, actor=alice)

    assert not Profile.objects.filter(pk=pk).exists()
    event = AuditEvent.objects.get(action="delete", object_id=str(pk))
    assert event.changes["name"] == ["Corporate Wi-Fi", None]
    assert len(event.changes["payloads"][0]) == 3


def test_a_profile_still_on_a_device_cannot_be_deleted(wifi_profile, device, alice):
    Delivery.objects.create(
        device=device,
        profile=wifi_profile,
        status="installed",
        delivered_version=1,
        delivered_generation=1,
    )

    with pytest.raises(ProfileInUse, match="still on 1 device"):
        delete_profile(profile=wifi_profile, actor=alice)

    assert Profile.objects.filter(pk=wifi_profile.pk).exists()
    assert not AuditEvent.objects.filter(action="delete").exists()
