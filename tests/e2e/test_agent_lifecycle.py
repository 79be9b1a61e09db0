"""The reference agent through a device's life against a live server: a request that
waits for approval (CertPoll), a profile that fails and is redelivered, a profile
withdrawn by unassignment, and unenrollment."""

import shutil
import subprocess
import threading
import time

import pytest
from cryptography import x509

from apps.certificates.models import Certificate, CertificateRequest
from apps.certificates.services import approve_request
from apps.devices.models import Device, DeviceToken, InstalledCertificate
from apps.devices.services import redeliver_profiles
from apps.enrollment.models import Challenge
from apps.profiles.models import Delivery, ProfileAssignment
from apps.profiles.services import unassign
from tests.e2e.conftest import (
    AGENT_TIMEOUT,
    ROOT,
    agent_env,
    enrollment_code,
    make_ca,
    make_dynamic_template,
    make_group,
    make_wifi_profile,
)

pytestmark = pytest.mark.django_db(transaction=True)

PENDING_LINE_TIMEOUT = 60


def set_up(erin, make_agent, **template_fields):
    """A Wi-Fi profile for a group and erin's laptop enrolled into it (not checked in)."""
    ca = make_ca()
    template = make_dynamic_template(ca, **template_fields)
    group = make_group()
    profile = make_wifi_profile(template=template, ca=ca, group=group)
    agent = make_agent("erin-laptop")
    answer = agent.enroll(enrollment_code(erin, group), name="erin-laptop", serial="SN-ERIN-1")
    return agent, Device.objects.get(pk=answer["device_id"]), profile


def test_the_agent_polls_a_request_until_it_is_approved(server, make_agent, erin, alice):
    # Polls every 2 s, up to 20 times: time enough to approve after the first PENDING.
    agent, device, profile = set_up(
        erin, make_agent, approval_required=True, retry_interval_seconds=2, max_failed_attempts=20
    )
    process = subprocess.Popen(
        agent.command("checkin", "--max-wait", "120"),
        cwd=ROOT,
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The agent says so once the server answered PENDING (and committed the request).
        progress = wait_for_line(process, "SCEP request pending")
        request = CertificateRequest.objects.get(device=device)
        assert request.status == "pending"
        approve_request(certificate_request=request, actor=alice)
        stdout, stderr = process.communicate(timeout=AGENT_TIMEOUT)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 0, stdout + progress + stderr
    assert '"action": "installed"' in stdout
    row = Certificate.objects.get(device=device)
    identity = agent.profile_dir(profile.pk) / f"{profile.payloads.get(kind='scep').uuid}.cert.pem"
    issued = x509.load_pem_x509_certificate(identity.read_bytes())
    assert issued.serial_number == int(row.serial, 16)
    assert Delivery.objects.get(device=device).status == "installed"
    # Issued by an approval, it is still the certificate of this device, owner and profile.
    assert (row.user, row.profile, row.source) == (erin, profile, "scep")


def wait_for_line(process: subprocess.Popen, text: str) -> str:
    """Read the agent's stderr until a line holds ``text``; what was read."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(PENDING_LINE_TIMEOUT):
        process.kill()
        pytest.fail(f"the agent never said {text!r}:\n{''.join(lines)}")
    return "".join(lines)


def test_a_profile_that_fails_is_acked_failed_and_installs_once_redelivered(
    server, make_agent, erin, settings
):
    agent, device, profile = set_up(erin, make_agent)
    settings.PUBLIC_BASE_URL = f"{server}/nowhere"  # the profile names a SCEP URL that 404s

    failed = agent.checkin(expect=1)

    (outcome,) = failed["profiles"]
    assert (failed["exit_code"], outcome["action"]) == (1, "failed")
    assert outcome["error"].startswith("SCEP GetCACaps: HTTP 404 from ")
    delivery = Delivery.objects.get(device=device)
    assert (delivery.status, delivery.error) == ("failed", outcome["error"])
    assert not Certificate.objects.exists()
    assert agent.state()["profiles"] == {}
    assert not agent.profile_dir(profile.pk).exists()

    settings.PUBLIC_BASE_URL = server
    redeliver_profiles(device=device)
    fixed = agent.checkin()

    assert [p["action"] for p in fixed["profiles"]] == ["installed"]
    assert Delivery.objects.get(device=device).status == "installed"
    assert Certificate.objects.get().device == device
    # The failed delivery's challenge was never used; the redelivery minted another.
    assert sorted(c.used_at is not None for c in Challenge.objects.filter(device=device)) == [
        False,
        True,
    ]


def test_an_unassigned_profile_is_removed_from_the_agent(server, make_agent, erin):
    agent, device, profile = set_up(erin, make_agent)
    agent.checkin()
    assert InstalledCertificate.objects.filter(device=device).count() == 2
    unassign(assignment=ProfileAssignment.objects.get(profile=profile))

    result = agent.checkin()

    assert [(p["action"], p["profile_id"]) for p in result["profiles"]] == [("removed", profile.pk)]
    assert not agent.profile_dir(profile.pk).exists()
    assert agent.state()["profiles"] == {}
    assert Delivery.objects.get(device=device).status == "removed"
    assert result["inventory_sent"] == 0
    assert not InstalledCertificate.objects.filter(device=device).exists()
    assert agent.checkin()["profiles"] == []  # removed once, not again


def test_unenrolling_revokes_the_token_and_clears_the_agent(server, make_agent, erin, tmp_path):
    agent, device, profile = set_up(erin, make_agent)
    agent.checkin()
    saved_state = tmp_path / "saved-state.json"
    shutil.copy(agent.state_dir / "state.json", saved_state)

    result = agent.run("unenroll")

    assert (result["device_id"], result["removed_profiles"]) == (device.pk, [profile.pk])
    device.refresh_from_db()
    assert device.status == "unenrolled"
    assert DeviceToken.objects.get(device=device).revoked_at is not None
    assert not (agent.state_dir / "state.json").exists()
    assert not (agent.state_dir / "profiles").exists()
    assert "not enrolled" in agent.checkin(expect=2)["error"]
    # A copy of the old state is of no use: the token was revoked.
    shutil.copy(saved_state, agent.state_dir / "state.json")
    started = time.monotonic()
    refused = agent.checkin(expect=2)
    assert refused["error"].startswith("checkin: HTTP 401")
    assert time.monotonic() - started < AGENT_TIMEOUT
