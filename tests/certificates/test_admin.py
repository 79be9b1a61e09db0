"""The certificate inventory in the console."""

import datetime
import io
import zipfile

import pytest
from cryptography import x509
from django.utils import timezone

from apps.audit.services import history_for
from apps.certificates.models import Certificate
from tests.factories import force_certificate, force_template, force_user

pytestmark = pytest.mark.django_db
LIST = "/admin/certificates/certificate/"


def changelist_ids(client, query: str) -> set[int]:
    response = client.get(LIST + query)
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


@pytest.fixture
def inventory():
    template = force_template(sans=[("dns", "$USERID$.zylker.com")])
    soon = force_certificate(template=template, user=force_user("soon"))
    later = force_certificate(template=template, user=force_user("later"))
    Certificate.objects.filter(pk=soon.pk).update(
        not_after=timezone.now() + datetime.timedelta(days=5)
    )
    Certificate.objects.filter(pk=later.pk).update(
        not_after=timezone.now() + datetime.timedelta(days=60)
    )
    other = force_certificate(user=force_user("other"))
    return soon, later, other


def test_search_finds_by_serial_subject_san_and_fingerprint(client, bob, inventory):
    soon, later, other = inventory
    client.force_login(bob)
    colon_serial = ":".join(soon.serial[i : i + 2] for i in range(0, len(soon.serial), 2)).upper()
    assert changelist_ids(client, f"?q={soon.serial}") == {soon.pk}
    assert changelist_ids(client, f"?q={colon_serial}") == {soon.pk}
    assert changelist_ids(client, "?q=CN%3Dlater") == {later.pk}
    assert changelist_ids(client, "?q=soon.zylker.com") == {soon.pk}
    assert changelist_ids(client, f"?q={other.fingerprint_sha256}") == {other.pk}


def test_filters_by_expiry_window_status_ca_and_template(client, bob, inventory):
    soon, later, other = inventory
    client.force_login(bob)
    assert changelist_ids(client, "?expires_within=7") == {soon.pk}
    assert changelist_ids(client, "?expires_within=90") == {soon.pk, later.pk}
    assert changelist_ids(client, f"?template__id__exact={soon.template_id}") == {soon.pk, later.pk}
    assert changelist_ids(client, f"?ca__id__exact={other.ca_id}") == {other.pk}
    assert changelist_ids(client, "?status__exact=active") == {soon.pk, later.pk, other.pk}


def test_alice_revokes_with_a_reason_through_the_action(client, alice, inventory):
    soon, later, other = inventory
    client.force_login(alice)
    selection = {"action": "revoke_selected", "_selected_action": [soon.pk, later.pk]}
    confirm = client.post(LIST, selection)
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert Certificate.objects.filter(status="revoked").count() == 0
    done = client.post(LIST, {**selection, "reason": "key_compromise"})
    assert done.status_code == 302
    for cert in (soon, later):
        cert.refresh_from_db()
        assert (cert.status, cert.revocation_reason) == ("revoked", "key_compromise")
        assert cert.revoked_at is not None
        event = history_for(cert).get(action="revoke")
        assert event.actor == alice and event.changes["status"] == ["active", "revoked"]
    other.refresh_from_db()
    assert other.status == "active"


def test_revoking_from_the_certificate_page(client, alice, inventory):
    soon = inventory[0]
    client.force_login(alice)
    url = f"{LIST}{soon.pk}/revoke/"
    assert "Revoke" in client.get(url).content.decode()
    response = client.post(url, {"reason": "superseded"})
    assert response.status_code == 302
    soon.refresh_from_db()
    assert soon.revocation_reason == "superseded"
    again = client.post(url, {"reason": "key_compromise"}, follow=True)
    assert "already revoked" in again.content.decode()
    soon.refresh_from_db()
    assert soon.revocation_reason == "superseded"


def test_bob_cannot_revoke(client, bob, inventory):
    soon = inventory[0]
    client.force_login(bob)
    assert client.post(f"{LIST}{soon.pk}/revoke/", {"reason": "key_compromise"}).status_code == 403
    client.post(
        LIST,
        {"action": "revoke_selected", "_selected_action": [soon.pk], "reason": "key_compromise"},
    )
    soon.refresh_from_db()
    assert soon.status == "active"
    assert not history_for(soon).filter(action="revoke").exists()


def test_anonymous_cannot_revoke(client, inventory):
    soon = inventory[0]
    response = client.post(f"{LIST}{soon.pk}/revoke/", {"reason": "key_compromise"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    soon.refresh_from_db()
    assert soon.status == "active"


def test_downloads_in_pem_and_der_one_or_many(client, bob, inventory):
    soon, later, _ = inventory
    client.force_login(bob)
    der = client.get(f"{LIST}{soon.pk}/download/der/")
    assert der["Content-Type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.content) == soon.certificate
    bundle = client.post(LIST, {"action": "download_pem", "_selected_action": [soon.pk, later.pk]})
    assert set(x509.load_pem_x509_certificates(bundle.content)) == {
        soon.certificate,
        later.certificate,
    }
    archive = client.post(LIST, {"action": "download_der", "_selected_action": [soon.pk, later.pk]})
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert sorted(names) == sorted([f"{soon.serial}.cer", f"{later.serial}.cer"])


def test_certificates_cannot_be_added_or_deleted_in_the_console(client, alice, inventory):
    client.force_login(alice)
    assert client.get(LIST + "add/").status_code == 403
    assert client.post(f"{LIST}{inventory[0].pk}/delete/", {"post": "yes"}).status_code == 403
    assert Certificate.objects.count() == 3


def test_the_dashboard_draws_status_counts_and_the_expiry_chart(client, bob, inventory):
    soon = inventory[0]
    Certificate.objects.filter(pk=soon.pk).update(status="revoked")
    client.force_login(bob)
    response = client.get("/admin/")
    page = response.content.decode()
    by_status = {row["status"]: row["count"] for row in response.context["certificates_by_status"]}
    assert by_status == {
        "active": 2,
        "pending_revocation": 0,
        "revoked": 1,
        "expired": 0,
        "superseded": 0,
        "removed": 0,
    }
    weeks = response.context["expiring_weeks"]
    assert len(weeks) == 12
    assert [w["count"] for w in weeks] == [0] * 8 + [1] + [0] * 3  # `later`, in 60 days
    assert '<svg id="expiry-chart"' in page and page.count('class="bar"') == 12
    tallest = weeks[8]
    assert (tallest["x"], tallest["y"], tallest["height"]) == (520, 30, 160)
    assert '<rect class="bar" x="520" y="30" width="40" height="160" data-count="1">' in page
    assert '<rect class="bar" x="40" y="190" width="40" height="0" data-count="0">' in page


def test_the_audit_list_is_read_only(client, alice, inventory):
    client.force_login(alice)
    page = client.get("/admin/audit/auditevent/")
    assert page.status_code == 200 and "Certificate issued" in page.content.decode()
    event_pk = history_for(inventory[0]).get().pk
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert (
        client.post(f"/admin/audit/auditevent/{event_pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert (
        client.post(f"/admin/audit/auditevent/{event_pk}/change/", {"message": "x"}).status_code
        == 403
    )
    assert history_for(inventory[0]).get().message.startswith("issued by")
