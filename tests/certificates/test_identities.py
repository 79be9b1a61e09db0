"""Server-generated identities (``apps.certificates.identities``): early generation when a
profile with a PKCS#12 payload is assigned, one identity per device and template, the key
kept encrypted, the purge of identities not delivered in time, and renewal.

Personas: dana owns the laptops of the "Zylker laptops" group; erin owns a tablet that is
in no group (alice, bob and charlie are in ``tests/conftest.py``)."""

import datetime
import logging

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.identities import (
    current_identity,
    generate_pending_identities,
    purge_undelivered_identities,
    renew_identity,
)
from apps.certificates.models import Certificate, Identity, LifecycleSettings
from apps.certificates.services import revoke_certificate
from apps.core import secrets
from apps.core.fields import secret_context
from apps.devices import services as device_services
from apps.devices.choices import DeviceStatus, Platform
from apps.devices.models import Device, DeviceGroup, UserAttributes
from apps.enrollment.choices import ChallengeType, KeyGeneration
from apps.enrollment.models import CertificateTemplate
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles import delivery
from apps.profiles.choices import PayloadKind, ProfilePlatform
from apps.profiles.models import Delivery, Profile, ProfilePayload
from apps.profiles.services import assign
from tests.core.test_no_key_in_clear import database_dump, forms_of
from tests.factories import force_ca, force_template, random_name

pytestmark = pytest.mark.django_db

SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SANS = [("rfc822", "$EMAIL$"), ("dns", "$DEVICE_SN$.devices.zylker.com")]
KEY_CONTEXT = secret_context(Identity, "private_key")


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def ca(db) -> CertificateAuthority:
    return force_ca(subject="O=Zylker,CN=Zylker Identities CA")


@pytest.fixture
def server_template(ca) -> CertificateTemplate:
    """Keys generated on the server (EC P-256: fast), subject and SANs from the device."""
    return server_key_template(ca)


def server_key_template(ca: CertificateAuthority, **fields) -> CertificateTemplate:
    fields.setdefault("key_algorithm", KeyAlgorithm.EC_P256)
    return force_template(
        ca=ca,
        key_generation=KeyGeneration.SERVER,
        challenge_type=ChallengeType.NONE,
        subject=SUBJECT,
        sans=SANS,
        **fields,
    )


@pytest.fixture
def group(dana) -> DeviceGroup:
    """Zylker laptops: dana's two Linux laptops."""
    group = DeviceGroup.objects.create(name="Zylker laptops")
    group.devices.set([laptop(dana, "SN-DANA-1"), laptop(dana, "SN-DANA-2")])
    return group


def laptop(owner, serial: str, **fields) -> Device:
    fields.setdefault("platform", Platform.LINUX)
    return Device.objects.create(
        owner=owner, name=f"laptop {serial}", serial_number=serial, **fields
    )


def pkcs12_profile(template: CertificateTemplate, **fields) -> Profile:
    """A profile with one PKCS#12 identity payload of ``template``."""
    name = random_name("vpn")
    fields.setdefault("platform", ProfilePlatform.ANY)
    profile = Profile.objects.create(name=name, identifier=f"com.zylker.{name}", **fields)
    payload = ProfilePayload(
        profile=profile, kind=PayloadKind.PKCS12, display_name="VPN identity", template=template
    )
    payload.full_clean()
    payload.save()
    return profile


def stored_key(identity: Identity):
    der = secrets.decrypt(identity.private_key, context=KEY_CONTEXT)
    return serialization.load_der_private_key(der, password=None)


def generated_on(device: Device) -> list[Identity]:
    return list(Identity.objects.filter(device=device).select_related("certificate"))


# --- early generation -----------------------------------------------------------------------


def test_assigning_a_pkcs12_profile_generates_the_identities_once_it_commits(
    group, server_template, eager_celery, django_capture_on_commit_callbacks
):
    pytest.importorskip("apps.certificates.tasks")
    profile = pkcs12_profile(server_template)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assign(profile=profile, group=group)
        assert not Identity.objects.exists()  # nothing before the assignment commits
    for callback in callbacks:
        callback()

    assert sorted(i.device.serial_number for i in Identity.objects.all()) == [
        "SN-DANA-1",
        "SN-DANA-2",
    ]


def test_two_profiles_of_one_template_give_each_device_one_identity(group, server_template, dana):
    first, second = pkcs12_profile(server_template), pkcs12_profile(server_template)
    assign(profile=first, group=group)
    assign(profile=second, group=group)

    generated = generate_pending_identities()

    assert generated == 2
    for device in group.devices.all():
        (identity,) = generated_on(device)
        certificate = identity.certificate
        assert (identity.template, identity.current, identity.delivered_at) == (
            server_template,
            True,
            None,
        )
        assert (certificate.source, certificate.device, certificate.user) == (
            "server_generated",
            device,
            dana,
        )
        assert (certificate.template, certificate.profile, certificate.status) == (
            server_template,
            first,
            "active",
        )
        assert certificate.subject == f"O=Zylker,OU=dana,CN={device.serial_number}"
        assert certificate.subject_alt_names == (
            f"email:dana@zylker.com\nDNS:{device.serial_number}.devices.zylker.com"
        )
        assert crypto.public_key_matches(stored_key(identity), certificate.certificate)
        assert identity.chain_pem == server_template.ca.chain_pem_bundle()
    assert generate_pending_identities() == 0
    assert Certificate.objects.count() == 2


def test_early_generation_follows_the_key_type_and_size_of_the_template(ca, dana):
    template = server_key_template(ca, key_algorithm=KeyAlgorithm.RSA_3072)
    device = laptop(dana, "SN-DANA-9")
    assign(profile=pkcs12_profile(template), device=device)

    assert generate_pending_identities() == 1

    (identity,) = generated_on(device)
    assert crypto.key_strength(stored_key(identity).public_key()) == ("rsa", 3072)
    assert identity.certificate.certificate.public_key().key_size == 3072


def test_only_enrolled_devices_the_profile_targets_on_their_platform_get_one(
    group, server_template, dana, erin
):
    unenrolled = laptop(dana, "SN-DANA-3", status=DeviceStatus.UNENROLLED)
    group.devices.add(unenrolled)
    erins_tablet = laptop(erin, "SN-ERIN-1", platform=Platform.IPADOS)
    mac = laptop(dana, "SN-DANA-MAC", platform=Platform.MACOS)
    assign(profile=pkcs12_profile(server_template), group=group)
    apple_only = pkcs12_profile(server_key_template(server_template.ca), platform="apple")
    assign(profile=apple_only, group=group)
    assign(profile=apple_only, device=mac)

    assert generate_pending_identities() == 3

    assert generated_on(unenrolled) == [] and generated_on(erins_tablet) == []
    assert [i.template for i in generated_on(mac)] == [apple_only.payloads.get().template]
    laptops = group.devices.exclude(pk=unenrolled.pk)
    assert {i.template for d in laptops for i in generated_on(d)} == {server_template}


def test_a_device_without_the_values_its_certificate_needs_is_skipped(
    group, server_template, dana, caplog
):
    no_serial = laptop(dana, "")
    group.devices.add(no_serial)
    assign(profile=pkcs12_profile(server_template), group=group)

    assert generate_pending_identities() == 2

    assert generated_on(no_serial) == []
    assert f"early generation for device {no_serial.pk} skipped" in caplog.text
    assert "$DEVICE_SN$" in caplog.text
    assert Certificate.objects.count() == 2


def test_the_key_is_encrypted_in_its_row_and_in_no_audit_event(group, server_template, caplog):
    caplog.set_level(logging.DEBUG)
    assign(profile=pkcs12_profile(server_template), group=group)
    generate_pending_identities()
    identity = Identity.objects.first()
    der = secrets.decrypt(identity.private_key, context=KEY_CONTEXT)

    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Identity._meta.db_table)
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [identity.pk])  # noqa: S608
        raw_row = "|".join(str(value) for value in cursor.fetchone()).encode()
    audit = b"".join(
        f"{e.object_repr}|{e.changes}|{e.message}".encode() for e in AuditEvent.objects.all()
    )

    assert raw_row.count(b"mdmc1:") == 1  # the key is there, sealed
    for blob in (raw_row, database_dump(), audit, caplog.text.encode()):
        assert b"PRIVATE KEY" not in blob
        for form in forms_of(der):
            assert form not in blob
    issued = AuditEvent.objects.filter(action="issue", object_id=str(identity.certificate_id))
    assert issued.count() == 1


# --- on demand --------------------------------------------------------------------------------


def test_an_identity_whose_certificate_was_revoked_is_replaced_on_demand(server_template, dana):
    device = laptop(dana, "SN-DANA-1")
    first = current_identity(device=device, template=server_template)
    assert current_identity(device=device, template=server_template) == first

    revoke_certificate(certificate=first.certificate, reason="key_compromise")
    second = current_identity(device=device, template=server_template)

    first.refresh_from_db()
    assert second != first and second.current and not first.current
    assert second.certificate.replaces is None  # a replacement, not a renewal
    assert Identity.objects.filter(device=device, current=True).get() == second


# --- purge --------------------------------------------------------------------------------


@pytest.fixture
def traveller():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def test_an_identity_not_delivered_in_14_days_is_deleted_and_its_certificate_revoked(
    group, server_template, traveller
):
    assign(profile=pkcs12_profile(server_template), group=group)
    generate_pending_identities()
    certificates = list(Certificate.objects.order_by("pk"))

    traveller.shift(datetime.timedelta(days=14) - datetime.timedelta(seconds=1))
    assert purge_undelivered_identities() == 0
    traveller.shift(datetime.timedelta(seconds=1))
    purged = purge_undelivered_identities()

    assert purged == 2
    assert not Identity.objects.exists()
    for certificate in certificates:
        certificate.refresh_from_db()
        assert (certificate.status, certificate.revocation_reason) == (
            "revoked",
            "cessation_of_operation",
        )
        assert certificate.pending_revocation_cause == "undelivered"
        assert certificate.revoked_at == timezone.now()
    deleted = AuditEvent.objects.filter(action="delete", content_type__model="identity")
    assert deleted.count() == 2
    assert all("not delivered within 14 days" in e.message for e in deleted)
    assert AuditEvent.objects.filter(action="revoke").count() == 2
    # Idempotent; and the early sweep leaves these devices to on-demand generation.
    assert purge_undelivered_identities() == 0
    assert generate_pending_identities() == 0
    device = group.devices.first()
    fresh = current_identity(device=device, template=server_template)
    assert fresh.certificate.status == "active" and fresh.certificate not in certificates


def test_the_purge_period_is_the_lifecycle_setting(group, server_template, traveller):
    config = LifecycleSettings.load()
    config.identity_purge_days = 3
    config.save()
    assign(profile=pkcs12_profile(server_template), group=group)
    generate_pending_identities()

    traveller.shift(datetime.timedelta(days=3))

    assert purge_undelivered_identities() == 2


def test_delivered_identities_and_ones_awaiting_an_answer_are_kept(
    group, server_template, traveller
):
    profile = pkcs12_profile(server_template)
    assign(profile=profile, group=group)
    generate_pending_identities()
    acknowledged, awaiting = group.devices.order_by("pk")
    for device in (acknowledged, awaiting):
        assert len(device_services.checkin(device=device).install) == 1
    delivery.acknowledge(
        device=acknowledged, profile_id=profile.pk, status="installed", version=1, generation=1
    )

    traveller.shift(datetime.timedelta(days=30))

    assert purge_undelivered_identities() == 0
    assert Identity.objects.get(device=acknowledged).delivered_at is not None
    assert Identity.objects.get(device=awaiting).delivered_at is None
    # The device that awaited said it failed: nothing holds that key any more.
    delivery.acknowledge(
        device=awaiting, profile_id=profile.pk, status="failed", version=1, generation=1
    )
    assert purge_undelivered_identities() == 1
    assert list(Identity.objects.values_list("device", flat=True)) == [acknowledged.pk]


# --- renewal ------------------------------------------------------------------------------


def test_renewal_generates_the_replacement_and_redelivers_the_profiles_that_carry_it(
    server_template, dana
):
    device = laptop(dana, "SN-DANA-1")
    carrying, other_carrier = pkcs12_profile(server_template), pkcs12_profile(server_template)
    unrelated = pkcs12_profile(server_key_template(server_template.ca))
    for profile in (carrying, other_carrier, unrelated):
        assign(profile=profile, device=device)
    first = device_services.checkin(device=device).install
    old = Identity.objects.get(template=server_template)

    assert renew_identity(old.certificate) is True

    old.refresh_from_db()
    new = Identity.objects.get(template=server_template, current=True)
    assert not old.current and new != old
    assert new.certificate.replaces == old.certificate
    # The certificate names the profile whose delivery generated the first identity.
    assert new.certificate.profile == old.certificate.profile
    assert old.certificate.profile in (carrying, other_carrier)
    assert not crypto.public_key_matches(stored_key(new), old.certificate.certificate)
    old.certificate.refresh_from_db()
    assert old.certificate.status == "superseded"  # revoked once its grace period ends
    generations = dict(Delivery.objects.values_list("profile", "generation"))
    assert generations == {carrying.pk: 2, other_carrier.pk: 2, unrelated.pk: 1}
    again = device_services.checkin(device=device).install
    assert sorted(item["profile_id"] for item in again) == sorted([carrying.pk, other_carrier.pk])
    fingerprints = {
        payload["pkcs12"]["fingerprint_sha256"]
        for item in again
        for payload in item["profile"]["payloads"]
    }
    assert fingerprints == {new.certificate.fingerprint_sha256}
    assert len(first) == 3
    # Once only.
    assert renew_identity(old.certificate) is False
    assert Identity.objects.filter(template=server_template).count() == 2


def test_renewal_refuses_what_it_cannot_renew(server_template, dana, ca):
    device = laptop(dana, "SN-DANA-1")
    identity = current_identity(device=device, template=server_template)
    scep_issued = Certificate.objects.create(
        ca=ca,
        serial="abc",
        subject="CN=x",
        not_before=timezone.now(),
        not_after=timezone.now(),
        fingerprint_sha256="0" * 64,
        certificate_pem=identity.certificate.certificate_pem,
        source="scep",
    )
    assert renew_identity(scep_issued) is False

    Device.objects.filter(pk=device.pk).update(status=DeviceStatus.WIPED)
    assert renew_identity(identity.certificate) is False

    assert Identity.objects.get() == identity and identity.current


def test_a_renewal_that_cannot_be_issued_changes_nothing_and_is_audited(
    server_template, dana, caplog
):
    device = laptop(dana, "SN-DANA-1")
    identity = current_identity(device=device, template=server_template)
    UserAttributes.objects.filter(user=dana).delete()
    server_template.san_rows.create(san_type="upn", value="$USER_UPN$", position=9)

    assert renew_identity(identity.certificate) is False

    identity.refresh_from_db()
    assert identity.current and Identity.objects.count() == 1
    assert Certificate.objects.get().status == "active"
    refusal = AuditEvent.objects.get(action="issue_failed")
    assert "renewal" in refusal.message and "$USER_UPN$" in refusal.message
    assert "not renewed" in caplog.text
