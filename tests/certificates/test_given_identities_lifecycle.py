"""User-provided and single-file identities in the lifecycle: the expiry digest lists them
with what to do, and a grace period ending marks them removed (no CA of ours revokes them)."""

import datetime

import pytest
import time_machine
from django.core import mail

from apps.certificates.choices import CertificateStatus, IdentityPurpose
from apps.certificates.services import send_expiry_digest, sweep_revocations
from apps.certificates.single_file import store_single_file_identity
from apps.certificates.uploads import store_user_identity
from apps.pki.models import CertificateAuthority
from tests.certificates.bundles import PASSWORD, bundle, user_certificate
from tests.factories import force_user, make_key

pytestmark = pytest.mark.django_db
DAY = datetime.timedelta(days=1)


def upload(user, days: int):
    key = make_key()
    data = bundle(key, user_certificate(key, days=days))
    return store_user_identity(
        user=user, purpose=IdentityPurpose.SMIME_SIGNING, data=data, password=PASSWORD
    )


def test_the_expiry_digest_lists_uploads_and_single_file_identities_with_what_to_do(alice):
    dave = force_user("dave")
    uploaded = upload(dave, days=20)
    key = make_key()
    shared = store_single_file_identity(
        ca=CertificateAuthority(name="Shared", slug="shared"),
        data=bundle(key, user_certificate(key, days=25)),
        password=PASSWORD,
    )
    later = upload(force_user("erin"), days=200)

    assert send_expiry_digest() == {"digests sent": 1, "certificates listed": 2}

    body = mail.outbox[0].body
    assert (
        f"serial {uploaded.certificate.serial}  template -  user dave  (uploaded by its owner: "
        "they upload a renewed one in the portal)"
    ) in body
    assert (
        f"serial {shared.certificate.serial}  template -  user -  (single file identity of CA "
        "server Shared: upload a renewed file)"
    ) in body
    assert later.certificate.serial not in body


def test_a_deactivated_owners_upload_is_marked_removed_when_its_grace_period_ends():
    dave = force_user("dave")
    identity = upload(dave, days=365)
    dave.is_active = False
    dave.save()

    sweep_revocations()
    with time_machine.travel(identity.certificate.created_at + 30 * DAY, tick=False):
        result = sweep_revocations()

    identity.certificate.refresh_from_db()
    assert (result["revoked"], result["removed"]) == (0, 1)
    assert identity.certificate.status == CertificateStatus.REMOVED
    assert identity.certificate.revoked_at is None
