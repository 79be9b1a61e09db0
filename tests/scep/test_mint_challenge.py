"""Minting dynamic challenges: ``manage.py mint_challenge`` and the staff API action
``POST /api/v1/templates/{id}/challenges/``. A minted value works once at the SCEP
endpoint, and only its salted hash is stored."""

import datetime
import io

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import Challenge
from apps.scep.protocol import FailInfo, PKIStatus
from tests.api.helpers import token_client
from tests.scep.client import make_csr, rsa_key

pytestmark = pytest.mark.django_db
PUBLIC_ID_LENGTH = 12


def mint(*args: str) -> str:
    out = io.StringIO()
    call_command("mint_challenge", *args, stdout=out)
    return out.getvalue()


def enroll(scep, template, challenge: str):
    key = rsa_key()
    return scep(template).pkcs_req(make_csr(key, challenge=challenge), key)


def raw_row(challenge: Challenge) -> list[str]:
    """Every column of the challenge's row as stored, read past the ORM."""
    table = connection.ops.quote_name(Challenge._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [challenge.pk])  # noqa: S608
        return [str(value) for value in cursor.fetchone()]


def assert_only_its_hash_is_stored(value: str) -> None:
    challenge = Challenge.objects.get(public_id=value[:PUBLIC_ID_LENGTH])
    secret = value[PUBLIC_ID_LENGTH:]
    row = raw_row(challenge)
    assert len(secret) == 32
    assert not any(value in column or secret in column for column in row)
    assert challenge.digest in row  # the salted SHA-256 is what is kept


# --- the management command -------------------------------------------------------------


def test_the_command_prints_a_challenge_that_works_once(scep, template_dynamic, device, dana):
    printed = mint("--template", template_dynamic.slug, "--device", str(device.pk))
    value = printed.strip()

    first = enroll(scep, template_dynamic, value)
    second = enroll(scep, template_dynamic, value)

    assert printed == value + "\n"
    assert first.status is PKIStatus.SUCCESS
    assert (second.status, second.fail_info, second.fail_info_text) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "the challenge password is wrong, expired or used",
    )
    challenge = Challenge.objects.get()
    assert (challenge.template, challenge.device, challenge.user) == (
        template_dynamic,
        device,
        dana,
    )
    assert challenge.used_at is not None
    assert_only_its_hash_is_stored(value)


def test_the_command_mints_for_a_user_with_a_lifetime(template_dynamic, dana):
    now = timezone.now()
    with time_machine.travel(now, tick=False):
        value = mint("--template", template_dynamic.slug, "--user", "dana", "--minutes", "5")

    challenge = Challenge.objects.get(public_id=value[:PUBLIC_ID_LENGTH])
    assert (challenge.device, challenge.user) == (None, dana)
    assert challenge.expires_at == now + datetime.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--template", "no-such-template"], "no template with slug 'no-such-template'"),
        (["--template", "{dynamic}", "--device", "999999"], "no device with id 999999"),
        (["--template", "{dynamic}", "--user", "nobody"], "no user 'nobody'"),
        (["--template", "{static}"], "template {static} does not use dynamic challenges"),
        (["--template", "{none}"], "template {none} does not use dynamic challenges"),
        (["--template", "{dynamic}", "--minutes", "0"], "--minutes must be between 1 and 10080"),
    ],
    ids=["unknown-template", "unknown-device", "unknown-user", "static", "none", "minutes"],
)
def test_the_command_refuses_and_creates_nothing(
    template_dynamic, template_static, template_none, device, args, message
):
    slugs = {
        "dynamic": template_dynamic.slug,
        "static": template_static.slug,
        "none": template_none.slug,
    }
    args = [arg.format(**slugs) for arg in args]

    with pytest.raises(CommandError) as refused:
        mint(*args)

    assert str(refused.value) == message.format(**slugs)
    assert not Challenge.objects.exists()


# --- the staff API action -----------------------------------------------------------------


def challenges_url(template) -> str:
    return f"/api/v1/templates/{template.pk}/challenges/"


def test_alice_mints_a_challenge_shown_once_through_the_api(
    scep, template_dynamic, device, dana, alice
):
    now = timezone.now().replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        response = token_client(alice).post(
            challenges_url(template_dynamic), {"device": device.pk}, format="json"
        )

    assert response.status_code == 201
    body = response.json()
    value = body["challenge"]
    assert body == {
        "challenge": value,
        "expires_at": (now + datetime.timedelta(minutes=60)).isoformat().replace("+00:00", "Z"),
        "template": template_dynamic.pk,
        "device": device.pk,
    }
    challenge = Challenge.objects.get()
    assert (challenge.template, challenge.device, challenge.user) == (
        template_dynamic,
        device,
        dana,
    )
    assert_only_its_hash_is_stored(value)
    assert enroll(scep, template_dynamic, value).status is PKIStatus.SUCCESS
    assert enroll(scep, template_dynamic, value).status is PKIStatus.FAILURE


def test_bob_who_only_views_cannot_mint(template_dynamic, device, bob):
    response = token_client(bob).post(
        challenges_url(template_dynamic), {"device": device.pk}, format="json"
    )

    assert response.status_code == 403
    assert not Challenge.objects.exists()


def test_a_template_without_dynamic_challenges_is_400(template_static, device, alice):
    response = token_client(alice).post(
        challenges_url(template_static), {"device": device.pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"Template {template_static.slug} does not use dynamic challenges."
    }
    assert not Challenge.objects.exists()


def test_an_unknown_device_is_400_and_creates_nothing(template_dynamic, alice):
    response = token_client(alice).post(
        challenges_url(template_dynamic), {"device": 999999}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["device"]
    assert not Challenge.objects.exists()


def test_an_api_challenge_minted_for_another_template_fails_here(
    scep, template_dynamic, make_template, device, alice
):
    other = make_template(ChallengeType.DYNAMIC)
    value = token_client(alice).post(challenges_url(other), {}, format="json").json()["challenge"]

    result = enroll(scep, template_dynamic, value)

    assert result.status is PKIStatus.FAILURE
    assert Challenge.objects.get().used_at is None
