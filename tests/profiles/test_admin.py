"""The profile editor in the console: payloads and assignments inline, version bumped on
save, audit history, the .mobileconfig download for a device, and the delivery list."""

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import history_for
from apps.enrollment.choices import ChallengeType, ExternalDelivery
from apps.enrollment.models import Challenge
from apps.enrollment.services import redeem_challenge
from apps.pki.choices import KeyAlgorithm
from apps.profiles.choices import DeliveryStatus, PayloadKind
from apps.profiles.models import Delivery, Profile, ProfileAssignment
from tests import ndes_double
from tests.factories import force_template
from tests.profiles.apple_schema import assert_valid_mobileconfig
from tests.profiles.factories import force_device, force_group, force_payload, force_profile
from tests.scep.upstream import ndes_external_ca, offline_external_ca

pytestmark = pytest.mark.django_db
ADD = "/admin/profiles/profile/add/"
ndes = ndes_double.ndes  # fixture: the stand-in for NDES's mscep_admin page
EXTERNAL_URL = "https://ndes.zylker.com/certsrv/mscep/mscep.dll"


def change_url(profile: Profile) -> str:
    return f"/admin/profiles/profile/{profile.pk}/change/"


def download_url(profile: Profile) -> str:
    return f"/admin/profiles/profile/{profile.pk}/mobileconfig/"


def _value(bound) -> str | None:
    value = bound.value()
    if isinstance(value, bool):
        return "on" if value else None
    return "" if value is None else str(value)


def form_data(response) -> dict:
    """The change form's current values, as the browser would post them back."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for name in form.fields:
            value = _value(form[name])
            if value is not None:
                data[form.add_prefix(name)] = value
    return data


def add_form(scep_template, **overrides) -> dict:
    data = {
        "name": "Corporate Wi-Fi",
        "identifier": "com.zylker.wifi",
        "description": "",
        "platform": "apple",
        "signing_ca": "",
        "payloads-TOTAL_FORMS": "1",
        "payloads-INITIAL_FORMS": "0",
        "payloads-0-kind": "scep",
        "payloads-0-display_name": "Wi-Fi identity",
        "payloads-0-position": "0",
        "payloads-0-template": str(scep_template.pk),
        "payloads-0-auto_join": "on",
        "payloads-0-use_ssl": "on",
        "assignments-TOTAL_FORMS": "0",
        "assignments-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def state(profile: Profile) -> tuple:
    fresh = Profile.objects.get(pk=profile.pk)
    return (
        fresh.name,
        fresh.version,
        list(fresh.payloads.values_list("uuid", "kind", "ssid")),
        list(fresh.assignments.values_list("group", "device")),
        AuditEvent.objects.count(),
        Challenge.objects.count(),
    )


def test_alice_creates_a_profile_with_a_scep_payload(client, alice, scep_template):
    client.force_login(alice)

    response = client.post(ADD, add_form(scep_template))

    assert response.status_code == 302, response.content.decode()[:3000]
    profile = Profile.objects.get(identifier="com.zylker.wifi")
    assert profile.version == 1
    assert [(p.kind, p.template) for p in profile.payloads.all()] == [("scep", scep_template)]
    event = history_for(profile).get()
    assert (event.action, event.actor) == ("create", alice)
    assert event.changes["payloads"] == [None, [f"SCEP 'Wi-Fi identity': template={scep_template}"]]


def test_the_editor_shows_what_each_kind_needs_and_refuses_what_is_missing(
    client, alice, scep_template
):
    events = AuditEvent.objects.count()
    client.force_login(alice)
    page = client.get(ADD).content.decode()
    assert "Needs the SSID, the security and an identity" in page
    assert "profiles/payload_editor.js" in page

    response = client.post(
        ADD,
        add_form(
            scep_template,
            **{"payloads-0-kind": "wifi", "payloads-0-template": "", "payloads-0-ssid": ""},
        ),
    )

    assert response.status_code == 200
    errors = str(response.context["inline_admin_formsets"][0].formset.errors)
    assert "Required for Wi-Fi payloads." in errors
    assert Profile.objects.count() == 0
    assert AuditEvent.objects.count() == events


def test_the_editor_refuses_an_ec_template_for_apple_devices(client, alice, scep_template):
    scep_template.key_algorithm = "ec-p256"
    scep_template.save()
    client.force_login(alice)

    response = client.post(ADD, add_form(scep_template))

    assert response.status_code == 200
    assert "Apple devices enroll RSA 2048 or 4096 keys only" in response.content.decode()
    assert Profile.objects.count() == 0


def test_one_save_of_payloads_and_assignments_bumps_the_version_once(
    client, alice, wifi_profile, device
):
    group = force_group(device)
    client.force_login(alice)
    page = client.get(change_url(wifi_profile))
    assert page.status_code == 200
    data = form_data(page)
    data["payloads-2-ssid"] = "ZylkerStaff"
    data.update(
        {"assignments-TOTAL_FORMS": "1", "assignments-0-group": str(group.pk)},
    )

    response = client.post(change_url(wifi_profile), data)

    assert response.status_code == 302, response.context and response.context["errors"]
    wifi_profile.refresh_from_db()
    assert wifi_profile.version == 2
    assert wifi_profile.payloads.get(kind=PayloadKind.WIFI).ssid == "ZylkerStaff"
    assignment = ProfileAssignment.objects.get(profile=wifi_profile)
    assert assignment.group == group
    assert history_for(assignment).get().action == "create"
    event = history_for(wifi_profile).get()
    assert event.changes["version"] == [1, 2]
    assert event.changes["assignments"] == [[], [f"group {group}"]]
    assert "ssid=ZylkerStaff" in event.changes["payloads"][1][2]


def test_saving_an_unchanged_profile_keeps_its_version(client, alice, wifi_profile):
    client.force_login(alice)
    data = form_data(client.get(change_url(wifi_profile)))

    response = client.post(change_url(wifi_profile), data)

    assert response.status_code == 302
    assert Profile.objects.get(pk=wifi_profile.pk).version == 1
    assert not history_for(wifi_profile).exists()


def test_the_change_page_shows_the_version_read_only_and_the_history(
    client, alice, wifi_profile, device
):
    Delivery.objects.create(
        device=device, profile=wifi_profile, status=DeliveryStatus.INSTALLED, delivered_version=1
    )
    client.force_login(alice)

    page = client.get(change_url(wifi_profile)).content.decode()

    assert 'name="version"' not in page
    assert '<div class="readonly">1</div>' in page
    assert "Installed: 1" in page
    assert "Download .mobileconfig for a device" in page
    history = client.get(f"/admin/profiles/profile/{wifi_profile.pk}/history/")
    assert "Modification history" in history.content.decode()


def test_bob_sees_the_profile_but_cannot_change_it_or_download_it(
    client, bob, wifi_profile, device
):
    alice_view = Profile.objects.get(pk=wifi_profile.pk)
    unchanged = state(alice_view)
    client.force_login(bob)
    assert client.get(change_url(wifi_profile)).status_code == 200

    edit = client.post(change_url(wifi_profile), {"name": "Renamed by bob"})
    download_page = client.get(download_url(wifi_profile))
    download = client.post(download_url(wifi_profile), {"device": str(device.pk)})
    delete = client.post(f"/admin/profiles/profile/{wifi_profile.pk}/delete/", {"post": "yes"})

    assert (edit.status_code, download_page.status_code, download.status_code) == (403, 403, 403)
    assert delete.status_code == 403
    assert state(wifi_profile) == unchanged


def test_charlie_is_sent_to_the_login_page(client, charlie, wifi_profile):
    client.force_login(charlie)

    response = client.get(download_url(wifi_profile))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_alice_downloads_a_mobileconfig_for_a_device_with_a_fresh_challenge(
    client, alice, wifi_profile, device, scep_template
):
    client.force_login(alice)
    assert client.get(download_url(wifi_profile)).status_code == 200

    response = client.post(download_url(wifi_profile), {"device": str(device.pk)})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert response["Content-Disposition"] == (
        'attachment; filename="comzylkerwifi-dana-macbook.mobileconfig"'
    )
    document = assert_valid_mobileconfig(response.content)
    scep = document["PayloadContent"][0]["PayloadContent"]
    assert scep["Subject"][-1] == [["CN", "C02ZK1ABMD6T"]]
    challenge = Challenge.objects.get()
    assert (challenge.template, challenge.device, challenge.used_at) == (
        scep_template,
        device,
        None,
    )
    assert redeem_challenge(template=scep_template, value=scep["Challenge"]) == challenge
    event = AuditEvent.objects.get(action="download")
    assert event.message == f".mobileconfig for device dana-macbook (#{device.pk}), version 1"
    assert Profile.objects.get(pk=wifi_profile.pk).version == 1


def test_a_device_without_the_variables_gets_an_error_and_no_challenge(client, alice, wifi_profile):
    nameless = force_device(serial_number="")
    client.force_login(alice)

    response = client.post(download_url(wifi_profile), {"device": str(nameless.pk)})

    assert response.status_code == 200
    assert "has no value for this device or user" in response.content.decode()
    assert Challenge.objects.count() == 0
    assert not AuditEvent.objects.filter(action="download").exists()


def external_profile(ca) -> Profile:
    """An Apple profile whose SCEP payload sends the device to ``ca`` (delegate); its
    template's own challenge type (dynamic) is mdmcerts' and does not apply."""
    template = force_template(
        ca=ca,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.DYNAMIC,
        external_delivery=ExternalDelivery.DELEGATE,
    )
    profile = force_profile(name="Zylker VPN", identifier="com.zylker.vpn", platform="apple")
    force_payload(profile, PayloadKind.SCEP, display_name="VPN identity", template=template)
    return profile


def test_the_download_of_an_external_ca_profile_mints_no_challenge_of_mdmcerts(
    client, alice, device
):
    profile = external_profile(offline_external_ca(EXTERNAL_URL))
    client.force_login(alice)

    response = client.post(download_url(profile), {"device": str(device.pk)})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    scep = assert_valid_mobileconfig(response.content)["PayloadContent"][0]["PayloadContent"]
    assert (scep["URL"], scep["Challenge"]) == (EXTERNAL_URL, "counted-secret")
    assert Challenge.objects.count() == 0


def test_a_profile_whose_ca_hands_out_ndes_challenges_cannot_be_downloaded_by_hand(
    client, alice, device, ndes
):
    ca = ndes_external_ca(EXTERNAL_URL, challenge_url=ndes.url)
    profile = external_profile(ca)
    client.force_login(alice)

    response = client.post(download_url(profile), {"device": str(device.pk)})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert (
        f"This profile cannot be rendered for {device}: SCEP payload &#x27;VPN identity&#x27;: "
        f"CA server {ca} hands out one-time challenges; the challenge is fetched when the "
        "profile is delivered to its device, so the profile cannot be downloaded by hand."
    ) in response.content.decode()
    assert ndes.seen_authorizations == []  # no NDES challenge wasted on a download
    assert Challenge.objects.count() == 0
    assert not AuditEvent.objects.filter(action="download").exists()


def test_the_download_action_leads_to_the_page_for_one_profile(client, alice, wifi_profile):
    client.force_login(alice)

    response = client.post(
        "/admin/profiles/profile/",
        {"action": "download_for_device", "_selected_action": [str(wifi_profile.pk)]},
    )

    assert response.status_code == 302
    assert response["Location"] == download_url(wifi_profile)


def test_assignments_made_and_removed_in_their_own_list_are_audited_and_keep_the_version(
    client, alice, wifi_profile, device
):
    client.force_login(alice)

    added = client.post(
        "/admin/profiles/profileassignment/add/",
        {"profile": str(wifi_profile.pk), "group": "", "device": str(device.pk)},
    )
    assignment = ProfileAssignment.objects.get()
    removed = client.post(
        f"/admin/profiles/profileassignment/{assignment.pk}/delete/", {"post": "yes"}
    )

    assert (added.status_code, removed.status_code) == (302, 302)
    assert not ProfileAssignment.objects.exists()
    assert Profile.objects.get(pk=wifi_profile.pk).version == 1
    assert list(
        AuditEvent.objects.filter(content_type__model="profileassignment")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["create", "delete"]


def test_an_assignment_needs_a_group_or_a_device(client, alice, wifi_profile):
    client.force_login(alice)

    response = client.post(
        "/admin/profiles/profileassignment/add/",
        {"profile": str(wifi_profile.pk), "group": "", "device": ""},
    )

    assert response.status_code == 200
    assert "Assign the profile to a group or to a device" in response.content.decode()
    assert not ProfileAssignment.objects.exists()


def test_the_delivery_list_is_read_only_and_filters_by_status_and_profile(
    client, alice, wifi_profile, device
):
    Delivery.objects.create(device=device, profile=wifi_profile, status=DeliveryStatus.FAILED)
    client.force_login(alice)

    listing = client.get(
        f"/admin/profiles/delivery/?status__exact=failed&profile__id__exact={wifi_profile.pk}"
    )
    other = client.get("/admin/profiles/delivery/?status__exact=installed")

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == list(Delivery.objects.all())
    assert list(other.context["cl"].result_list) == []
    assert client.get("/admin/profiles/delivery/add/").status_code == 403
