"""``manage.py lifecycle run [--task NAME]``: the sweeps once, synchronously, each
reporting what it did."""

import datetime
import io

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.certificates.models import Certificate
from apps.devices import services as devices
from tests.certificates.lifecycle_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db
ALL_QUIET = [
    "identity-generation: 0 identities generated",
    "renewal: 0 renewals re-triggered",
    "revocation: 0 revocations started, 0 pending revocations cancelled, 0 revoked, "
    "0 removed, 0 CRLs published",
    "identity-purge: 0 identities purged",
    "expiry: 0 expired",
    "crl: 0 CRLs published",
    "digest: 0 digests sent, 0 certificates listed",
]


def lifecycle(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("lifecycle", "run", *args, stdout=out)
    return out.getvalue().splitlines()


def test_run_runs_every_sweep_and_says_what_each_did(db):
    assert lifecycle() == ALL_QUIET


def test_it_reports_the_work_done(laptop, enroll_laptop, alice, ca):
    gone = enroll_laptop("SN-GONE")
    devices.unenroll(device=gone.device)
    moment = laptop.certificate.not_after - datetime.timedelta(days=10)

    with time_machine.travel(moment, tick=False):
        lines = lifecycle()

    assert lines[1] == "renewal: 1 renewals re-triggered"
    assert lines[2] == (
        "revocation: 0 revocations started, 0 pending revocations cancelled, 1 revoked, "
        "0 removed, 1 CRLs published"
    )
    assert lines[5] == "crl: 0 CRLs published"  # the revocation sweep published it
    assert Certificate.objects.get(pk=gone.certificate.pk).status == "revoked"


def test_task_runs_one_sweep(laptop):
    with time_machine.travel(laptop.certificate.not_after + datetime.timedelta(hours=1)):
        assert lifecycle("--task", "expiry") == ["expiry: 1 expired"]


def test_an_unknown_task_is_refused_with_the_valid_names(db):
    with pytest.raises(CommandError) as raised:
        lifecycle("--task", "renewals")

    assert str(raised.value) == (
        "Unknown task 'renewals'. Valid tasks: identity-generation, renewal, revocation, "
        "identity-purge, expiry, crl, digest."
    )


def test_an_unknown_task_exits_non_zero_from_the_command_line(db, capsys):
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "lifecycle", "run", "--task", "nope"]).execute()

    assert exited.value.code == 1
    assert "Unknown task 'nope'. Valid tasks: identity-generation" in capsys.readouterr().err


@pytest.fixture
def identity_profile(ca, group, dana):
    """A PKCS#12 payload of a server-side key template, assigned to the group, which holds
    one enrolled laptop of dana's."""
    from apps.devices.models import Device
    from apps.enrollment.choices import ChallengeType, KeyGeneration
    from apps.profiles.choices import PayloadKind
    from apps.profiles.models import Profile, ProfilePayload
    from apps.profiles.services import assign
    from tests.factories import force_template

    template = force_template(
        ca=ca,
        key_generation=KeyGeneration.SERVER,
        challenge_type=ChallengeType.NONE,
        subject="O=Zylker,CN=$DEVICE_SN$",
    )
    profile = Profile.objects.create(name="VPN", identifier="com.zylker.vpn", platform="any")
    ProfilePayload.objects.create(
        profile=profile, kind=PayloadKind.PKCS12, display_name="VPN identity", template=template
    )
    device = Device.objects.create(
        name="laptop", platform="linux", serial_number="SN-V", owner=dana
    )
    group.devices.add(device)
    assign(profile=profile, group=group)
    return profile


def test_it_reports_identities_generated_renewed_and_purged(identity_profile):
    assert lifecycle("--task", "identity-generation") == [
        "identity-generation: 1 identities generated"
    ]
    generated = Certificate.objects.get(source="server_generated")

    with time_machine.travel(generated.not_after - datetime.timedelta(days=10), tick=False):
        renewal = lifecycle("--task", "renewal")
        purge = lifecycle("--task", "identity-purge")

    replacement = Certificate.objects.get(replaces=generated)
    assert renewal == ["renewal: 1 renewals re-triggered"]
    # The first identity was never delivered in its 355 days: purged; the replacement is new.
    assert purge == ["identity-purge: 1 identities purged"]
    assert Certificate.objects.get(pk=generated.pk).status == "revoked"
    assert Certificate.objects.get(pk=replacement.pk).status == "active"
