"""Signing in and out, the password change, and the lockout after repeated failures
(django-axes: by username and address together, for the portal and the console)."""

import datetime

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from tests.portal.conftest import ALICE_PASSWORD, BOB_PASSWORD, signed_in

pytestmark = pytest.mark.django_db

SIGN_IN = "/portal/sign-in/"
WRONG = "not-alices-Password-7"
MISMATCH = "That username and password do not match."
PAUSED = "Sign-in paused"


def sign_in(client: Client, username: str, password: str, **extra):
    return client.post(SIGN_IN, {"username": username, "password": password}, **extra)


def fail_until_locked(client: Client, username: str = "alice", **extra):
    """Wrong passwords up to the limit; the responses."""
    return [sign_in(client, username, WRONG, **extra) for _ in range(settings.AXES_FAILURE_LIMIT)]


def signed_in_user_id(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


def test_the_sign_in_page_is_a_form_with_a_csrf_token(client):
    response = client.get(SIGN_IN)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_alice_signs_in_and_lands_on_her_overview(client, alice):
    response = sign_in(client, "alice", ALICE_PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home")
    assert signed_in_user_id(client) == str(alice.pk)


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(client, alice):
    back = client.post(
        f"{SIGN_IN}?next=/portal/certificates/",
        {"username": "alice", "password": ALICE_PASSWORD, "next": "/portal/certificates/"},
    )
    client.logout()
    away = client.post(
        SIGN_IN,
        {"username": "alice", "password": ALICE_PASSWORD, "next": "https://evil.example/"},
    )

    assert back["Location"] == "/portal/certificates/"
    assert away["Location"] == reverse("portal:home")


def test_a_wrong_password_says_what_to_do_and_signs_nobody_in(client, alice):
    response = sign_in(client, "alice", WRONG)

    assert response.status_code == 200
    assert MISMATCH in response.content.decode()
    assert signed_in_user_id(client) is None


def test_repeated_failures_lock_the_username_out_even_with_the_right_password(client, alice):
    responses = fail_until_locked(client)

    assert [r.status_code for r in responses[:-1]] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert responses[-1].status_code == 429
    right = sign_in(client, "alice", ALICE_PASSWORD)
    assert right.status_code == 429
    page = right.content.decode()
    assert PAUSED in page
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    assert f"Wait {minutes} minutes and try again." in page
    assert signed_in_user_id(client) is None


def test_the_lockout_ends_after_the_cool_off(client, alice):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fail_until_locked(client)
    cool_off = settings.AXES_COOLOFF_TIME

    with time_machine.travel(start + cool_off - datetime.timedelta(seconds=5), tick=False):
        still_locked = sign_in(client, "alice", ALICE_PASSWORD)
    with time_machine.travel(start + cool_off + datetime.timedelta(seconds=5), tick=False):
        let_in = sign_in(client, "alice", ALICE_PASSWORD)

    assert still_locked.status_code == 429
    assert let_in.status_code == 302
    assert signed_in_user_id(client) == str(alice.pk)


def test_the_lockout_is_for_that_username_from_that_address_only(client, alice, bob):
    fail_until_locked(client)

    bob_here = sign_in(Client(), "bob", BOB_PASSWORD)
    alice_elsewhere = sign_in(Client(), "alice", ALICE_PASSWORD, REMOTE_ADDR="192.0.2.7")

    assert (bob_here.status_code, alice_elsewhere.status_code) == (302, 302)


def test_the_console_sign_in_is_locked_out_too(client, alice):
    alice.is_staff = True
    alice.save()
    fail_until_locked(client)

    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": ALICE_PASSWORD}
    )

    assert response.status_code == 429
    page = response.content.decode()
    assert PAUSED in page
    assert f'href="{reverse("admin:login")}">Back to sign-in' in page
    assert signed_in_user_id(client) is None


def test_failures_at_the_console_count_toward_the_lockout(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("admin:login"), {"username": "alice", "password": WRONG})

    assert sign_in(client, "alice", ALICE_PASSWORD).status_code == 429


def test_an_administrator_lifts_the_lockout_with_a_command(client, alice):
    fail_until_locked(client)

    call_command("axes_reset_username", "alice", verbosity=0)

    assert sign_in(client, "alice", ALICE_PASSWORD).status_code == 302


def test_a_success_clears_the_failures_so_far(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", WRONG)
    sign_in(client, "alice", ALICE_PASSWORD)
    client.logout()

    again = sign_in(client, "alice", WRONG)

    assert again.status_code == 200
    assert AccessAttempt.objects.get(username="alice").failures_since_start == 1


def test_the_failed_passwords_are_not_recorded(client, alice):
    fail_until_locked(client)

    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start == settings.AXES_FAILURE_LIMIT
    assert WRONG not in attempt.post_data
    assert "password=********************" in attempt.post_data


def test_sign_out_is_a_post(alice):
    client = signed_in(alice)

    by_link = client.get(reverse("portal:sign-out"))
    by_form = client.post(reverse("portal:sign-out"))

    assert by_link.status_code == 405
    assert by_form.status_code == 302
    assert by_form["Location"] == reverse("portal:sign-in")
    assert signed_in_user_id(client) is None


def test_alice_changes_her_password(alice):
    client = signed_in(alice)
    new = "Brand-new-Passw0rd-42"

    response = client.post(
        reverse("portal:password-change"),
        {"old_password": ALICE_PASSWORD, "new_password1": new, "new_password2": new},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home")
    alice.refresh_from_db()
    assert alice.check_password(new)
    assert signed_in_user_id(client) == str(alice.pk)  # the session survives the change
    event = AuditEvent.objects.get(object_repr="alice")
    assert (event.action, event.actor, event.message) == (
        "update",
        alice,
        "Password changed in the self-service portal.",
    )
    assert new not in str(event.changes) and ALICE_PASSWORD not in str(event.changes)


def test_a_wrong_old_password_changes_nothing(alice):
    client = signed_in(alice)

    response = client.post(
        reverse("portal:password-change"),
        {
            "old_password": WRONG,
            "new_password1": "Xy-new-pass-77",
            "new_password2": "Xy-new-pass-77",
        },
    )

    assert response.status_code == 200
    assert "Your old password was entered incorrectly." in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(ALICE_PASSWORD)
    assert not AuditEvent.objects.filter(object_repr="alice").exists()
