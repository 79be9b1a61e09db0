"""CA servers of kind single file: one uploaded identity, added and replaced in the
console, shown without its key, never able to issue."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.certificates.identities import load_key
from apps.certificates.models import Certificate, Identity
from apps.certificates.services import IssuanceRefused, issue_certificate
from apps.certificates.single_file import current_single_file_identity
from apps.enrollment.variables import values_for_user
from apps.pki import crypto
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority
from apps.profiles.models import Delivery
from tests.certificates.bundles import PASSWORD, bundle, issuer, user_certificate
from tests.factories import force_template, make_csr, make_key
from tests.profiles.factories import force_device, force_payload, force_profile

pytestmark = pytest.mark.django_db
ADD = "/admin/pki/certificateauthority/add/?mode=single_file"


def identity_file(*, ca=None):
    key = make_key("rsa2048")
    cert = user_certificate(key, email="wifi@zylker.com", ca=ca)
    return bundle(key, cert, cas=[ca[1]] if ca else []), cert


def add(client, data: bytes, password: str = PASSWORD):
    return client.post(
        ADD,
        {
            "name": "Shared Wi-Fi",
            "slug": "shared-wifi",
            "password": password,
            "identity_file": SimpleUploadedFile("wifi.p12", data),
        },
    )


def test_an_admin_adds_a_single_file_identity_and_its_key_is_stored_encrypted(client, alice):
    provider = issuer()
    data, cert = identity_file(ca=provider)
    client.force_login(alice)
    assert 'enctype="multipart/form-data"' in client.get(ADD).content.decode()

    response = add(client, data)

    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(slug="shared-wifi")
    assert (ca.kind, ca.certificate, ca.private_key, ca.subject) == (
        CAKind.SINGLE_FILE,
        cert,
        "",
        crypto.format_name(cert.subject),
    )
    identity = current_single_file_identity(ca)
    certificate = identity.certificate
    assert (certificate.source, certificate.ca, certificate.user) == (
        CertificateSource.SINGLE_FILE,
        ca,
        None,
    )
    assert identity.chain_pem == crypto.cert_pem(provider[1])
    assert crypto.public_key_matches(load_key(identity), cert)
    assert AuditEvent.objects.get(action="create", object_id=str(ca.pk)).actor == alice
    page = client.get(f"/admin/pki/certificateauthority/{ca.pk}/change/").content.decode()
    assert "stored encrypted under the KEK (never shown)" in page
    assert identity.private_key not in page


def test_a_wrong_password_is_a_form_error_and_nothing_is_stored(client, alice):
    data, _ = identity_file()
    client.force_login(alice)

    response = add(client, data, password="wrong")

    assert response.status_code == 200
    assert "The password is not right for this file." in response.content.decode()
    assert (CertificateAuthority.objects.count(), Identity.objects.count()) == (0, 0)


def test_a_huge_iteration_count_is_a_form_error(client, alice):
    from tests.certificates.bundles import with_iterations

    data, _ = identity_file()
    client.force_login(alice)

    response = add(client, with_iterations(data, mac=2_000_000_000))

    assert response.status_code == 200
    assert "asks for 2,000,000,000 key-derivation iterations" in response.content.decode()
    assert CertificateAuthority.objects.count() == 0


def test_a_renewed_file_replaces_the_identity_and_redelivers_its_profiles(client, alice):
    data, _ = identity_file()
    client.force_login(alice)
    add(client, data)
    ca = CertificateAuthority.objects.get()
    old = current_single_file_identity(ca)
    profile = force_profile(platform="any")
    force_payload(profile, "single_file", ca=ca)
    delivery = Delivery.objects.create(
        device=force_device(), profile=profile, status="installed", delivered_version=1,
        delivered_generation=1,
    )  # fmt: skip
    renewed, renewed_cert = identity_file()

    response = client.post(
        f"/admin/pki/certificateauthority/{ca.pk}/change/",
        {
            "name": ca.name,
            "description": "renewed",
            "password": PASSWORD,
            "identity_file": SimpleUploadedFile("wifi.p12", renewed),
        },
    )

    assert response.status_code == 302
    ca.refresh_from_db()
    assert (ca.certificate, ca.description) == (renewed_cert, "renewed")
    old.refresh_from_db()
    assert (old.current, old.private_key) == (False, "")
    assert Certificate.objects.get(pk=old.certificate_id).status == CertificateStatus.REMOVED
    assert current_single_file_identity(ca).certificate.replaces_id == old.certificate_id
    delivery.refresh_from_db()
    assert (delivery.status, delivery.generation) == ("pending", 2)


def test_a_single_file_ca_server_issues_nothing(client, alice):
    data, _ = identity_file()
    client.force_login(alice)
    add(client, data)
    template = force_template(ca=CertificateAuthority.objects.get())
    from tests.factories import force_user

    user = force_user()

    with pytest.raises(IssuanceRefused) as caught:
        issue_certificate(make_csr(), template, values_for_user(user), user=user)

    assert str(caught.value) == "CA server kind 'single_file' cannot issue here"
    assert Certificate.objects.count() == 1  # the identity's own
