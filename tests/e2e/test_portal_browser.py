"""The self-service portal in a real browser: Playwright (sync API) driving Debian's
chromium headless against the live server.

erin (an end user, ``tests/e2e/conftest.py``) signs in, uploads a PKCS#12 made by the
``openssl`` CLI, replaces it after confirming, downloads its certificate and deletes it;
wrong passwords show what to do; alice (the superuser of ``tests/conftest.py``) sets up a
user-provided profile in the console and erin's agent-enrolled laptop receives the upload.

Every page is photographed at desktop size and at phone size (375 x 812) into
``test-artifacts/screenshots/`` (git-ignored); the run prints the folder. At phone size
each page is also checked not to scroll sideways.
"""

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connections

from apps.certificates.models import Certificate, Identity
from apps.devices.models import Device
from apps.enrollment.models import CertificateTemplate
from apps.pki import crypto
from apps.profiles.models import Delivery, Profile
from tests.e2e.conftest import enrollment_code, make_ca, make_group
from tests.factories import make_key
from tests.openssl import openssl
from tests.portal.bundles import smime_certificate

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the Playwright Python package is needed for the browser tests "
    "(requirements-dev.txt; .ci/run installs it)",
)
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium (/usr/bin/chromium) is needed for the browser tests "
        "(apt-get install chromium; .ci/run installs it)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
ERIN_PASSWORD = "erin-Portal-pass-3"
P12_PASSWORD = "Erin-export-9!"
# Playwright waits for pages by itself; this bounds each wait (a slow CI is not a failure).
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def screenshot_dir(request) -> Iterator[Path]:
    """The folder the screenshots go to, emptied of this module's old ones; named in the
    test output at the end."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("portal-*.png"):
        old.unlink()
    yield SCREENSHOTS
    count = len(list(SCREENSHOTS.glob("portal-*.png")))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past pytest's output capture
            reporter.write_line(f"portal screenshots ({count}): {SCREENSHOTS}")


@pytest.fixture
def page(server, monkeypatch) -> Iterator:
    """A fresh chromium page (desktop size) on the live server."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still synchronous, so Django may allow them here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(viewport=DESKTOP, accept_downloads=True, base_url=server)
        context.set_default_timeout(WAIT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
            # The ORM calls made inside Playwright's context opened connections of their
            # own; PostgreSQL cannot drop the test database while they are open.
            connections.close_all()


@pytest.fixture
def shoot(page, screenshot_dir) -> Callable[..., None]:
    """``shoot(name)``: the current page at desktop and phone size, full length; a portal
    page must fit a phone's width (``portal=False``: a console page, desktop only)."""

    def take(name: str, *, portal: bool = True) -> None:
        sizes = (("desktop", DESKTOP), ("phone", PHONE)) if portal else (("desktop", DESKTOP),)
        for label, size in sizes:
            page.set_viewport_size(size)
            page.screenshot(path=screenshot_dir / f"portal-{name}-{label}.png", full_page=True)
            if label == "phone":
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name}: {overflow}px wider than a phone screen"
        page.set_viewport_size(DESKTOP)

    return take


@pytest.fixture
def erin_signs_in(erin, page) -> Callable[[], None]:
    erin.set_password(ERIN_PASSWORD)
    erin.save()

    def sign_in() -> None:
        page.goto("/portal/")
        expect(page).to_have_url(re.compile(r"/portal/sign-in/\?next=/portal/$"))
        page.get_by_label("Username").fill("erin")
        page.get_by_label("Password").fill(ERIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Hello, Erin")).to_be_visible()

    return sign_in


def openssl_p12(tmp_path: Path, *, email: str, name: str) -> Path:
    """A PKCS#12 exported by the openssl CLI (not by mdmcerts' own library) from an S/MIME
    certificate, its key and its issuer."""
    key = make_key()
    leaf, issuer = smime_certificate(key, email=email)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / f"{name}.key").write_bytes(key_pem)
    (tmp_path / f"{name}.crt").write_bytes(leaf.public_bytes(pem))
    (tmp_path / f"{name}-ca.crt").write_bytes(issuer.public_bytes(pem))
    out = tmp_path / f"{name}.p12"
    result = openssl(
        "pkcs12", "-export", "-inkey", str(tmp_path / f"{name}.key"),
        "-in", str(tmp_path / f"{name}.crt"), "-certfile", str(tmp_path / f"{name}-ca.crt"),
        "-passout", f"pass:{P12_PASSWORD}", "-out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return out


def upload(page, p12: Path, *, purpose: str, password: str = P12_PASSWORD) -> None:
    page.get_by_role("link", name="Upload", exact=True).click()
    page.get_by_label("Purpose").select_option(purpose)
    page.get_by_label("PKCS#12 file (.p12 or .pfx)").set_input_files(p12)
    page.get_by_label("Password of the file").fill(password)
    page.get_by_role("button", name="Upload", exact=True).click()


def test_a_user_uploads_replaces_downloads_and_deletes_a_certificate(
    page, shoot, erin, erin_signs_in, tmp_path
):
    first = openssl_p12(tmp_path, email="erin@zylker.com", name="erin")
    second = openssl_p12(tmp_path, email="erin.hale@zylker.com", name="erin-new")
    page.goto("/portal/sign-in/")
    shoot("sign-in")

    erin_signs_in()
    shoot("overview")
    page.get_by_role("link", name="Upload", exact=True).click()
    shoot("upload")
    upload(page, first, purpose="smime_signing")

    expect(page.get_by_role("status")).to_have_text(
        "Your S/MIME signing certificate is uploaded. Your devices receive it at their next "
        "check-in."
    )
    uploaded = Identity.objects.get(user=erin, current=True)
    assert uploaded.certificate.subject == "O=Zylker,CN=erin@zylker.com"
    listed = page.locator(f"#upload-{uploaded.pk}")
    expect(listed.get_by_role("heading")).to_have_text("S/MIME signing")
    expect(listed).to_contain_text("O=Zylker,CN=erin@zylker.com")
    shoot("certificates")

    # A second file for the same purpose waits for a confirmation, then replaces the first.
    upload(page, second, purpose="smime_signing")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Replace your S/MIME signing certificate?"
    )
    expect(page.locator(".compare")).to_contain_text("O=Zylker,CN=erin.hale@zylker.com")
    shoot("upload-confirm")
    assert Identity.objects.get(user=erin, current=True) == uploaded
    page.get_by_role("button", name="Replace it").click()
    expect(page.get_by_role("status")).to_contain_text("The previous one is retired.")
    replacement = Identity.objects.get(user=erin, current=True)
    assert replacement.certificate.subject == "O=Zylker,CN=erin.hale@zylker.com"

    with page.expect_download() as download:
        page.locator(f"#upload-{replacement.pk}").get_by_role(
            "link", name="Download certificate (PEM)"
        ).click()
    downloaded = Path(download.value.path()).read_text()
    assert downloaded == replacement.certificate.certificate_pem
    assert download.value.suggested_filename == f"{replacement.certificate.serial}.pem"

    page.get_by_role("link", name="My devices").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("My devices")
    shoot("devices-empty")
    page.get_by_role("link", name="Password").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Change your password")
    shoot("password-change")

    page.get_by_role("link", name="My certificates").click()
    page.locator(f"#upload-{replacement.pk}").get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Delete your S/MIME signing certificate?"
    )
    shoot("upload-delete")
    page.get_by_role("button", name="Delete it").click()

    expect(page.get_by_role("status")).to_contain_text(
        "Your S/MIME signing certificate is deleted."
    )
    expect(page.get_by_text("You have not uploaded a personal certificate.")).to_be_visible()
    assert not Identity.objects.filter(user=erin, current=True).exists()
    shoot("certificates-after-delete")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_wrong_passwords_say_what_to_do(page, shoot, erin, erin_signs_in, tmp_path):
    p12 = openssl_p12(tmp_path, email="erin@zylker.com", name="erin")
    page.goto("/portal/sign-in/")
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill("not-erins-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_contain_text(
        "That username and password do not match. Check both"
    )
    shoot("sign-in-wrong-password")

    erin_signs_in()
    upload(page, p12, purpose="smime_encryption", password="not-the-export-password")

    expect(page.get_by_role("alert")).to_have_text(
        "The password is not right for this file. Type the password you chose when you "
        "exported the certificate."
    )
    expect(page.get_by_label("Purpose")).to_have_value("smime_encryption")
    shoot("upload-wrong-password")
    assert not Identity.objects.filter(user=erin).exists()


def test_repeated_failed_sign_ins_show_the_lockout_page(page, shoot, erin, erin_signs_in):
    page.goto("/portal/sign-in/")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page.get_by_label("Username").fill("erin")
        page.get_by_label("Password").fill("guess-again")
        page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in paused")
    shoot("locked-out")
    page.get_by_role("link", name="Back to sign-in").click()
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill(ERIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in paused")


# --- the console sets up a user-provided profile; the agent-enrolled laptop receives it ----


ALICE_PASSWORD = "alice-password-1"  # tests/conftest.py


def console_sign_in(page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.locator('input[name="username"]').fill("alice")
    page.locator('input[name="password"]').fill(ALICE_PASSWORD)
    page.locator('input[type="submit"]').click()
    expect(page.locator("#user-tools")).to_contain_text("alice")


def console_creates_template(page, ca) -> None:
    """A request template for the laptop's own SCEP identity, on the e2e CA (the console
    fills in the slug from the name)."""
    page.goto("/admin/enrollment/certificatetemplate/add/")
    page.locator('input[name="name"]').fill("Zylker laptop identity")
    page.locator('select[name="ca"]').select_option(str(ca.pk))
    page.locator('input[name="subject"]').fill("O=Zylker,OU=$USERID$,CN=$DEVICE_SN$")
    page.locator('select[name="key_algorithm"]').select_option("rsa2048")
    page.locator('select[name="challenge_type"]').select_option("dynamic")
    page.locator('input[name="_save"]').click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")


def console_creates_profile(page, shoot, *, template, group) -> None:
    """A profile with a SCEP identity (the template) and erin's S/MIME signing upload,
    assigned to the laptops' group."""
    page.goto("/admin/profiles/profile/add/")
    page.locator('input[name="name"]').fill("Zylker mail")
    page.locator('input[name="identifier"]').fill("com.zylker.mail")
    page.locator('select[name="platform"]').select_option("any")
    add_payload = page.locator("#payloads-group .add-row a")
    add_payload.click()
    page.locator('select[name="payloads-0-kind"]').select_option("scep")
    page.locator('input[name="payloads-0-display_name"]').fill("Laptop identity")
    page.locator('input[name="payloads-0-position"]').fill("0")
    page.locator('select[name="payloads-0-template"]').select_option(str(template.pk))
    add_payload.click()
    page.locator('select[name="payloads-1-kind"]').select_option("user_provided")
    page.locator('input[name="payloads-1-display_name"]').fill("Mail signing")
    page.locator('input[name="payloads-1-position"]').fill("1")
    page.locator('select[name="payloads-1-user_identity_purpose"]').select_option("smime_signing")
    page.locator("#assignments-group .add-row a").click()
    page.locator('select[name="assignments-0-group"]').select_option(str(group.pk))
    shoot("console-profile-editor", portal=False)
    page.locator('input[name="_save"]').click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")


def test_the_console_sets_up_a_user_provided_profile_and_the_laptop_receives_the_upload(
    page, shoot, make_agent, erin, erin_signs_in, alice, tmp_path
):
    # erin's laptop is enrolled by the reference agent into the laptops' group.
    ca = make_ca()
    group = make_group()
    agent = make_agent("erin-laptop")
    code = enrollment_code(erin, group)
    device = Device.objects.get(
        pk=agent.enroll(code, name="erin-laptop", serial="SN-ERIN-9")["device_id"]
    )

    # alice sets it up in the console.
    console_sign_in(page)
    console_creates_template(page, ca)
    template = CertificateTemplate.objects.get(slug="zylker-laptop-identity")
    console_creates_profile(page, shoot, template=template, group=group)
    profile = Profile.objects.get(identifier="com.zylker.mail")
    assert [(p.kind, p.user_identity_purpose) for p in profile.payloads.all()] == [
        ("scep", ""),
        ("user_provided", "smime_signing"),
    ]
    page.context.clear_cookies()

    # Before erin uploads, the laptop gets nothing and "My devices" says what is missing.
    assert agent.checkin()["profiles"] == []
    erin_signs_in()
    expect(page.get_by_role("heading", name="Needs your attention")).to_be_visible()
    expect(page.locator(".attention")).to_contain_text("Upload your S/MIME signing certificate.")
    shoot("overview-attention")
    page.get_by_role("link", name="My devices").click()
    card = page.locator(f"#device-{device.pk}")
    expect(card.locator(".delivery")).to_contain_text("Zylker mail")
    expect(card.locator(".delivery .error")).to_contain_text(
        "Erin Hale has not uploaded an S/MIME signing certificate"
    )
    shoot("devices-missing-upload")

    # erin follows the link, uploads, and the laptop's next check-in installs it all.
    card.get_by_role("link", name="Upload it").click()
    expect(page.get_by_label("Purpose")).to_have_value("smime_signing")
    p12 = openssl_p12(tmp_path, email="erin@zylker.com", name="erin")
    page.get_by_label("PKCS#12 file (.p12 or .pfx)").set_input_files(p12)
    page.get_by_label("Password of the file").fill(P12_PASSWORD)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("certificate is uploaded")
    uploaded = Identity.objects.get(user=erin, current=True)

    result = agent.checkin()

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["profile_id"]) == ("installed", profile.pk)
    payload = profile.payloads.get(kind="user_provided")
    directory = agent.profile_dir(profile.pk)
    key = serialization.load_pem_private_key(
        (directory / f"{payload.uuid}.key.pem").read_bytes(), password=None
    )
    installed = x509.load_pem_x509_certificate(
        (directory / f"{payload.uuid}.cert.pem").read_bytes()
    )
    assert crypto.fingerprint_sha256(installed) == uploaded.certificate.fingerprint_sha256
    assert crypto.public_key_matches(key, installed)
    scep_issued = Certificate.objects.get(device=device, template=template)
    assert scep_issued.subject == "O=Zylker,OU=erin,CN=SN-ERIN-9"
    assert Delivery.objects.get(device=device, profile=profile).status == "installed"

    page.get_by_role("link", name="My devices").click()
    expect(card.locator(".delivery .badge")).to_have_text("Installed")
    expect(card.locator(".missing")).to_have_count(0)
    shoot("devices-installed")
    page.get_by_role("link", name="My certificates").click()
    expect(page.locator(f"#certificate-{scep_issued.pk}")).to_contain_text(
        "O=Zylker,OU=erin,CN=SN-ERIN-9"
    )
    shoot("certificates-with-device")
