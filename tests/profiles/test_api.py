"""Staff API: profiles (CRUD with nested payloads, read-only version) and assignments
(list, create, delete), each change versioned and audited; refusals change nothing."""

import uuid

import pytest
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.audit.services import history_for
from apps.profiles.models import Profile, ProfileAssignment
from tests.api.helpers import drf_datetime, token_client
from tests.profiles.factories import force_group

pytestmark = pytest.mark.django_db
PROFILES = "/api/v1/profiles/"
ASSIGNMENTS = "/api/v1/profile-assignments/"
SCEP_UUID = "6f1e5a8e-2b1d-4c36-9d0e-5a4f3c2b1a00"


def detail(profile: Profile) -> str:
    return f"{PROFILES}{profile.pk}/"


def payload_body(**overrides) -> dict:
    """A payload with every field at its default, as the API returns it."""
    body = {
        "uuid": None,
        "kind": "scep",
        "display_name": "",
        "template": None,
        "ca": None,
        "identity": None,
        "ssid": "",
        "hidden_network": False,
        "auto_join": True,
        "wifi_security": "",
        "trusted_server_names": "",
        "vpn_type": "",
        "server": "",
        "remote_identifier": "",
        "account": "",
        "host": "",
        "use_ssl": True,
        "email_address": "",
        "user_name": "",
    }
    body.update(overrides)
    return body


def new_profile(scep_template, issuing_ca) -> dict:
    return {
        "name": "Corporate Wi-Fi",
        "identifier": "com.zylker.wifi",
        "description": "Staff Wi-Fi",
        "signing_ca": issuing_ca.pk,
        "payloads": [
            {
                "uuid": SCEP_UUID,
                "kind": "scep",
                "display_name": "Wi-Fi identity",
                "template": scep_template.pk,
            },
            {"kind": "trusted_certificate", "display_name": "Chain", "ca": issuing_ca.pk},
            {
                "kind": "wifi",
                "display_name": "Corp Wi-Fi",
                "ssid": "ZylkerCorp",
                "wifi_security": "wpa3_enterprise",
                "identity": SCEP_UUID,
                "trusted_server_names": "radius.zylker.com",
            },
            {
                "kind": "email",
                "display_name": "Mail",
                "host": "mail.zylker.com",
                "email_address": "$EMAIL$",
                "identity": SCEP_UUID,
            },
        ],
    }


def state(profile: Profile) -> tuple:
    fresh = Profile.objects.get(pk=profile.pk)
    return (
        fresh.name,
        fresh.version,
        list(fresh.payloads.values_list("uuid", "kind", "ssid", "position")),
        list(fresh.assignments.values_list("group", "device")),
        AuditEvent.objects.count(),
    )


def test_alice_creates_a_profile_with_nested_payloads(alice, scep_template, issuing_ca):
    response = token_client(alice).post(
        PROFILES, new_profile(scep_template, issuing_ca), format="json"
    )

    assert response.status_code == 201, response.json()
    profile = Profile.objects.get()
    trusted, wifi, email = (p.uuid for p in profile.payloads.all()[1:])
    assert response.json() == {
        "id": profile.pk,
        "name": "Corporate Wi-Fi",
        "identifier": "com.zylker.wifi",
        "description": "Staff Wi-Fi",
        "platform": "apple",
        "signing_ca": issuing_ca.pk,
        "uuid": str(profile.uuid),
        "version": 1,
        "payloads": [
            payload_body(uuid=SCEP_UUID, display_name="Wi-Fi identity", template=scep_template.pk),
            payload_body(
                uuid=str(trusted),
                kind="trusted_certificate",
                display_name="Chain",
                ca=issuing_ca.pk,
            ),
            payload_body(
                uuid=str(wifi),
                kind="wifi",
                display_name="Corp Wi-Fi",
                identity=SCEP_UUID,
                ssid="ZylkerCorp",
                wifi_security="wpa3_enterprise",
                trusted_server_names="radius.zylker.com",
            ),
            payload_body(
                uuid=str(email),
                kind="email",
                display_name="Mail",
                identity=SCEP_UUID,
                host="mail.zylker.com",
                email_address="$EMAIL$",
            ),
        ],
        "created_at": drf_datetime(profile.created_at),
        "updated_at": drf_datetime(profile.updated_at),
    }
    event = history_for(profile).get()
    assert (event.action, event.actor, event.source_ip) == ("create", alice, "127.0.0.1")


def test_the_version_is_read_only_and_grows_with_each_change(alice, wifi_profile):
    client = token_client(alice)

    renamed = client.patch(detail(wifi_profile), {"version": 40, "name": "Wi-Fi"}, format="json")
    unchanged = client.patch(detail(wifi_profile), {"name": "Wi-Fi"}, format="json")

    assert (renamed.status_code, renamed.json()["version"]) == (200, 2)
    assert (unchanged.status_code, unchanged.json()["version"]) == (200, 2)
    assert history_for(wifi_profile).get().changes == {
        "name": ["Corporate Wi-Fi", "Wi-Fi"],
        "version": [1, 2],
    }


def test_payloads_sent_back_keep_their_uuids_and_missing_ones_are_deleted(alice, wifi_profile):
    client = token_client(alice)
    current = client.get(detail(wifi_profile)).json()
    scep, _trusted, wifi = current["payloads"]
    wifi["ssid"] = "ZylkerStaff"

    response = client.patch(detail(wifi_profile), {"payloads": [scep, wifi]}, format="json")

    assert response.status_code == 200, response.json()
    assert [p["uuid"] for p in response.json()["payloads"]] == [scep["uuid"], wifi["uuid"]]
    assert response.json()["payloads"][1]["ssid"] == "ZylkerStaff"
    assert response.json()["version"] == 2
    assert list(wifi_profile.payloads.values_list("kind", flat=True)) == ["scep", "wifi"]


def test_invalid_payloads_are_refused_and_change_nothing(alice, wifi_profile):
    client = token_client(alice)
    unchanged = state(wifi_profile)
    scep, trusted, wifi = client.get(detail(wifi_profile)).json()["payloads"]
    wifi["identity"] = trusted["uuid"]
    vpn = {"kind": "vpn", "display_name": "VPN", "vpn_type": "ikev2", "server": "$NOPE$"}

    bad_identity = client.put(
        detail(wifi_profile),
        {"name": "Wi-Fi", "identifier": "com.zylker.wifi", "payloads": [scep, trusted, wifi]},
        format="json",
    )
    bad_variable = client.patch(detail(wifi_profile), {"payloads": [vpn]}, format="json")
    unknown_identity = client.patch(
        detail(wifi_profile),
        {"payloads": [{**wifi, "identity": str(uuid.uuid4())}]},
        format="json",
    )

    assert bad_identity.status_code == 400
    assert bad_identity.json() == {
        "payloads": [
            "Payload 3 (Wi-Fi): identity certificate: The identity must be an identity "
            "payload (SCEP, PKCS#12, user-provided or single file) of the same profile."
        ]
    }
    assert bad_variable.status_code == 400
    assert "Unknown variable: $NOPE$" in str(bad_variable.json())
    assert unknown_identity.status_code == 400
    assert "is not a payload of this list" in str(unknown_identity.json())
    assert state(wifi_profile) == unchanged


def test_a_signing_ca_must_be_able_to_sign(alice, wifi_profile, issuing_ca):
    unchanged = state(wifi_profile)
    issuing_ca.private_key = ""
    issuing_ca.save()

    response = token_client(alice).patch(
        detail(wifi_profile), {"signing_ca": issuing_ca.pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "signing_ca": ["Profiles are signed by a local CA that holds its key; this CA cannot sign."]
    }
    assert state(wifi_profile) == unchanged


def test_alice_deletes_a_profile_and_it_is_audited(alice, wifi_profile):
    pk = wifi_profile.pk

    response = token_client(alice).delete(detail(wifi_profile))

    assert response.status_code == 204
    assert not Profile.objects.filter(pk=pk).exists()
    assert AuditEvent.objects.get(action="delete", object_id=str(pk)).actor == alice


def test_bob_reads_profiles_but_cannot_write_them(bob, wifi_profile, scep_template, issuing_ca):
    client = token_client(bob)
    unchanged = state(wifi_profile)

    listed = client.get(PROFILES)
    writes = [
        client.post(PROFILES, new_profile(scep_template, issuing_ca), format="json"),
        client.patch(detail(wifi_profile), {"name": "bob's"}, format="json"),
        client.delete(detail(wifi_profile)),
        client.post(ASSIGNMENTS, {"profile": wifi_profile.pk, "group": None}, format="json"),
    ]

    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["results"]] == [wifi_profile.pk]
    assert [r.status_code for r in writes] == [403, 403, 403, 403]
    assert state(wifi_profile) == unchanged
    assert Profile.objects.count() == 1


def test_charlie_and_strangers_are_refused(charlie, wifi_profile):
    assert token_client(charlie).get(PROFILES).status_code == 403
    assert APIClient().get(PROFILES).status_code in (401, 403)


def test_alice_assigns_lists_and_unassigns(alice, wifi_profile, device):
    client = token_client(alice)
    group = force_group(device)

    created = client.post(
        ASSIGNMENTS, {"profile": wifi_profile.pk, "group": group.pk}, format="json"
    )
    assignment = ProfileAssignment.objects.get()
    listed = client.get(ASSIGNMENTS, {"profile": wifi_profile.pk})
    other = client.get(ASSIGNMENTS, {"device": device.pk})
    removed = client.delete(f"{ASSIGNMENTS}{assignment.pk}/")

    assert created.status_code == 201
    assert created.json() == {
        "id": assignment.pk,
        "profile": wifi_profile.pk,
        "group": group.pk,
        "device": None,
        "created_at": drf_datetime(assignment.created_at),
    }
    assert [a["id"] for a in listed.json()["results"]] == [assignment.pk]
    assert other.json()["results"] == []
    assert removed.status_code == 204
    assert not ProfileAssignment.objects.exists()
    assert Profile.objects.get(pk=wifi_profile.pk).version == 1


def test_an_assignment_needs_exactly_one_target_and_only_once(alice, wifi_profile, device):
    client = token_client(alice)
    client.post(ASSIGNMENTS, {"profile": wifi_profile.pk, "device": device.pk}, format="json")
    group = force_group(device)
    unchanged = state(wifi_profile)

    neither = client.post(ASSIGNMENTS, {"profile": wifi_profile.pk}, format="json")
    both = client.post(
        ASSIGNMENTS,
        {"profile": wifi_profile.pk, "group": group.pk, "device": device.pk},
        format="json",
    )
    again = client.post(
        ASSIGNMENTS, {"profile": wifi_profile.pk, "device": device.pk}, format="json"
    )

    assert [r.status_code for r in (neither, both, again)] == [400, 400, 400]
    assert neither.json() == {"non_field_errors": ["Give a group or a device (one of them)."]}
    assert again.json() == {
        "non_field_errors": [
            f"Corporate Wi-Fi is already assigned to device dana-macbook (#{device.pk})."
        ]
    }
    assert state(wifi_profile) == unchanged
