"""The demo set-up behind ``manage.py bootstrap --demo``: an admin, an API token, a local
root CA and a request template, so that a fresh checkout can be tried at once; and for
devices, an end user, a second template with dynamic challenges, a group with a Wi-Fi
profile (SCEP, trusted chain, Wi-Fi EAP-TLS) assigned to it, and a multi-use enrollment
code for that group owned by the end user.

Every demo secret (the admin and end-user passwords, the API token key, the static
challenge, the enrollment code) is derived from ``SECRET_KEY`` with HMAC-SHA256 of a fixed
label. A second run therefore prints the same values without storing them anywhere, and
creates nothing new. Whoever knows ``SECRET_KEY`` can already forge sessions, so the
derivation gives nothing away; still, the demo is for development machines, not
production.
"""

import base64
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils.crypto import salted_hmac

from apps.audit.services import record_change
from apps.core.models import ApiToken, hash_token
from apps.devices.models import DeviceGroup, EnrollmentCode
from apps.enrollment.choices import ChallengeType, ExtendedKeyUsage, SanType, SubjectSource
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName
from apps.pki.choices import KeyAlgorithm, SignatureHash
from apps.pki.models import CertificateAuthority
from apps.pki.services import generate_local_ca
from apps.profiles.choices import PayloadKind, ProfilePlatform, WifiSecurity
from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload

ADMIN_USERNAME = "admin"
ADMIN_EMAIL = "admin@example.com"
CA_NAME = "mdmcerts Demo Root CA"
CA_SLUG = "demo-root"
CA_SUBJECT = f"O=mdmcerts demo,CN={CA_NAME}"
TEMPLATE_NAME = "Demo device certificate"
TEMPLATE_SLUG = "demo"
TEMPLATE_SUBJECT = "O=mdmcerts demo,CN=$USERID$"
TOKEN_NAME = "demo"  # noqa: S105 (the token's label, not its key)
PORTAL_USERNAME = "demo.user"
PORTAL_EMAIL = "demo.user@example.com"
WIFI_TEMPLATE_NAME = "Demo Wi-Fi certificate"
WIFI_TEMPLATE_SLUG = "demo-wifi"
WIFI_TEMPLATE_SUBJECT = "O=mdmcerts demo,CN=$USERID$"
WIFI_TEMPLATE_SANS = [("rfc822", "$EMAIL$"), ("dns", "$DEVICE_SN$.devices.example.com")]
GROUP_NAME = "Demo devices"
PROFILE_NAME = "Demo Wi-Fi"
PROFILE_IDENTIFIER = "com.example.mdmcerts.demo.wifi"
WIFI_SSID = "mdmcerts-demo"
RADIUS_SERVER_NAME = "radius.example.com"
ENROLLMENT_CODE_NAME = "Demo enrollment code"
CODE_PREFIX_LENGTH = 8  # as EnrollmentCode.assign_code stores it

# No 0/o, 1/l/i: the values are read off a terminal and typed into a login form.
READABLE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def derive_secret(label: str, *, groups: int = 4, group_size: int = 5) -> str:
    """A readable secret, e.g. ``k7qzp-m3xrd-...``, fixed for a given SECRET_KEY and label."""
    number = int.from_bytes(salted_hmac("mdmcerts.demo", label, algorithm="sha256").digest(), "big")
    chars = []
    for _ in range(groups * group_size):
        number, index = divmod(number, len(READABLE_ALPHABET))
        chars.append(READABLE_ALPHABET[index])
    return "-".join("".join(chars[i : i + group_size]) for i in range(0, len(chars), group_size))


def derive_token_key() -> str:
    """The demo API token's key, in the shape of a generated one (43 URL-safe characters)."""
    digest = salted_hmac("mdmcerts.demo", "api_token", algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class DemoSetup:
    """What ``ensure_demo`` found or created. A ``None`` secret cannot be shown any more:
    the admin changed the password, revoked the token or replaced the challenge."""

    admin: AbstractBaseUser
    admin_password: str | None
    api_token: str | None
    ca: CertificateAuthority
    template: CertificateTemplate
    static_challenge: str | None
    portal_user: AbstractBaseUser
    portal_password: str | None
    wifi_template: CertificateTemplate
    group: DeviceGroup
    profile: Profile
    enrollment_code: str | None
    created: tuple[str, ...]

    def as_dict(self) -> dict:
        """The keys scripts rely on (later issues add keys; none is ever removed)."""
        base = settings.PUBLIC_BASE_URL
        return {
            "admin_url": f"{base}/admin/",
            "admin_username": self.admin.get_username(),
            "admin_password": self.admin_password,
            "api_url": f"{base}/api/v1/",
            "api_token": self.api_token,
            "ca_name": self.ca.name,
            "ca_slug": self.ca.slug,
            "ca_fingerprint_sha256": self.ca.fingerprint_sha256,
            "ca_certificate_url": self.ca.public_url("ca.crt"),
            "template_name": self.template.name,
            "template_slug": self.template.slug,
            "scep_url": f"{base}/scep/{self.template.slug}/pkiclient.exe",
            "static_challenge": self.static_challenge,
            "portal_username": self.portal_user.get_username(),
            "portal_password": self.portal_password,
            "wifi_template_name": self.wifi_template.name,
            "wifi_template_slug": self.wifi_template.slug,
            "wifi_scep_url": f"{base}/scep/{self.wifi_template.slug}/pkiclient.exe",
            "group_name": self.group.name,
            "profile_name": self.profile.name,
            "profile_identifier": self.profile.identifier,
            "device_api_url": f"{base}/api/device/v1/",
            "enrollment_code": self.enrollment_code,
            "created": list(self.created),
        }


def ensure_demo() -> DemoSetup:
    """Create whatever part of the demo is missing; leave existing objects as they are."""
    created: list[str] = []
    with transaction.atomic():
        admin, new = _ensure_admin()
        created += ["admin"] if new else []
        api_token, new = _ensure_token(admin)
        created += ["api_token"] if new else []
        ca, new = _ensure_ca(admin)
        created += ["ca"] if new else []
        template, new = _ensure_template(ca, admin)
        created += ["template"] if new else []
        devices = _ensure_device_demo(ca, admin)
        created += devices.created
    password = derive_secret("admin_password")
    portal_password = derive_secret("portal_password")
    portal_user = devices.portal_user
    return DemoSetup(
        admin=admin,
        admin_password=password if admin.check_password(password) else None,
        api_token=api_token,
        ca=ca,
        template=template,
        static_challenge=template.reveal_static_challenge() or None,
        portal_user=portal_user,
        portal_password=portal_password if portal_user.check_password(portal_password) else None,
        wifi_template=devices.wifi_template,
        group=devices.group,
        profile=devices.profile,
        enrollment_code=devices.enrollment_code,
        created=tuple(created),
    )


@dataclass(frozen=True)
class DeviceDemo:
    """The device half of the demo, and the names of what was created now."""

    portal_user: AbstractBaseUser
    wifi_template: CertificateTemplate
    group: DeviceGroup
    profile: Profile
    enrollment_code: str | None
    created: list[str]


def _ensure_device_demo(ca: CertificateAuthority, admin: AbstractBaseUser) -> DeviceDemo:
    """The end user, the dynamic template, the group with its Wi-Fi profile and the
    enrollment code."""
    user, new_user = _ensure_portal_user()
    template, new_template = _ensure_wifi_template(ca, admin)
    group, new_group = _ensure_group(admin)
    profile, new_profile = _ensure_profile(ca, template, group, admin)
    code, new_code = _ensure_code(user, group, admin)
    made = {
        "portal_user": new_user,
        "wifi_template": new_template,
        "group": new_group,
        "profile": new_profile,
        "enrollment_code": new_code,
    }
    return DeviceDemo(user, template, group, profile, code, [k for k, v in made.items() if v])


def _ensure_admin() -> tuple[AbstractBaseUser, bool]:
    users = get_user_model()._default_manager
    admin = users.filter(username=ADMIN_USERNAME).first()
    if admin is not None:
        return admin, False
    admin = users.create_superuser(
        username=ADMIN_USERNAME, email=ADMIN_EMAIL, password=derive_secret("admin_password")
    )
    return admin, True


def _ensure_token(admin: AbstractBaseUser) -> tuple[str | None, bool]:
    key = derive_token_key()
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(key)).first()
    if token is None:
        ApiToken.objects.create_token(user=admin, name=TOKEN_NAME, key=key)
        return key, True
    usable = token.revoked_at is None and token.user.is_active and token.user.is_staff
    return (key if usable else None), False


def _ensure_ca(admin: AbstractBaseUser) -> tuple[CertificateAuthority, bool]:
    ca = CertificateAuthority.objects.filter(slug=CA_SLUG).first()
    if ca is not None:
        return ca, False
    ca = generate_local_ca(
        ca=CertificateAuthority(
            name=CA_NAME, slug=CA_SLUG, description="Created by manage.py bootstrap --demo."
        ),
        subject=CA_SUBJECT,
        # RSA: the CA every SCEP client and MDM platform accepts, old ones included.
        key_algorithm=KeyAlgorithm.RSA_2048,
        signature_hash=SignatureHash.SHA256,
        validity_years=10,
        actor=admin,
    )
    return ca, True


def _ensure_template(
    ca: CertificateAuthority, admin: AbstractBaseUser
) -> tuple[CertificateTemplate, bool]:
    template = CertificateTemplate.objects.filter(slug=TEMPLATE_SLUG).first()
    if template is not None:
        return template, False
    template = CertificateTemplate(
        name=TEMPLATE_NAME,
        slug=TEMPLATE_SLUG,
        description="Created by manage.py bootstrap --demo.",
        ca=ca,
        subject=TEMPLATE_SUBJECT,
        # SCEP clients (iOS, macOS, Windows, sscep) generate RSA keys.
        key_algorithm=KeyAlgorithm.RSA_2048,
        extended_key_usages=[ExtendedKeyUsage.CLIENT_AUTH.value],
        challenge_type=ChallengeType.STATIC,
        # A static challenge names no device or user, so over SCEP the subject and the
        # DNS/email SANs come from the request; the pattern serves `issue_cert --user`.
        subject_source=SubjectSource.REQUEST,
        allowed_request_san_types=[SanType.DNS, SanType.RFC822],
    )
    template.set_static_challenge(derive_secret("static_challenge"))
    template.full_clean()
    template.save()
    record_change(obj=template, before=None, actor=admin, message="created by bootstrap --demo")
    return template, True


def _ensure_portal_user() -> tuple[AbstractBaseUser, bool]:
    users = get_user_model()._default_manager
    user = users.filter(username=PORTAL_USERNAME).first()
    if user is not None:
        return user, False
    user = users.create_user(
        username=PORTAL_USERNAME,
        email=PORTAL_EMAIL,
        password=derive_secret("portal_password"),
        first_name="Demo",
        last_name="User",
    )
    return user, True


def _ensure_wifi_template(
    ca: CertificateAuthority, admin: AbstractBaseUser
) -> tuple[CertificateTemplate, bool]:
    template = CertificateTemplate.objects.filter(slug=WIFI_TEMPLATE_SLUG).first()
    if template is not None:
        return template, False
    template = CertificateTemplate(
        name=WIFI_TEMPLATE_NAME,
        slug=WIFI_TEMPLATE_SLUG,
        description="Created by manage.py bootstrap --demo: the demo Wi-Fi profile's identity.",
        ca=ca,
        subject=WIFI_TEMPLATE_SUBJECT,
        # RSA 2048: what Apple devices, Windows and the reference agent all generate.
        key_algorithm=KeyAlgorithm.RSA_2048,
        extended_key_usages=[ExtendedKeyUsage.CLIENT_AUTH.value],
        # A dynamic challenge is minted per delivery and names the device and its owner,
        # so the subject and SANs come from the template's variables.
        challenge_type=ChallengeType.DYNAMIC,
        subject_source=SubjectSource.TEMPLATE,
    )
    template.full_clean()
    template.save()
    for position, (san_type, value) in enumerate(WIFI_TEMPLATE_SANS):
        row = TemplateSubjectAltName(
            template=template, san_type=san_type, value=value, position=position
        )
        row.full_clean()
        row.save()
    record_change(obj=template, before=None, actor=admin, message="created by bootstrap --demo")
    return template, True


def _ensure_group(admin: AbstractBaseUser) -> tuple[DeviceGroup, bool]:
    group = DeviceGroup.objects.filter(name=GROUP_NAME).first()
    if group is not None:
        return group, False
    group = DeviceGroup.objects.create(
        name=GROUP_NAME, description="Created by manage.py bootstrap --demo."
    )
    record_change(obj=group, before=None, actor=admin, message="created by bootstrap --demo")
    return group, True


def _ensure_profile(
    ca: CertificateAuthority,
    template: CertificateTemplate,
    group: DeviceGroup,
    admin: AbstractBaseUser,
) -> tuple[Profile, bool]:
    """The Wi-Fi profile (SCEP identity, the CA chain, EAP-TLS), assigned to the group."""
    profile = Profile.objects.filter(identifier=PROFILE_IDENTIFIER).first()
    if profile is not None:
        return profile, False
    profile = Profile(
        name=PROFILE_NAME,
        identifier=PROFILE_IDENTIFIER,
        description="Created by manage.py bootstrap --demo.",
        platform=ProfilePlatform.ANY,
    )
    profile.full_clean()
    profile.save()
    scep = _payload(profile, 0, PayloadKind.SCEP, "Demo Wi-Fi identity", template=template)
    _payload(profile, 1, PayloadKind.TRUSTED_CERTIFICATE, CA_NAME, ca=ca)
    _payload(
        profile,
        2,
        PayloadKind.WIFI,
        f"Wi-Fi {WIFI_SSID}",
        ssid=WIFI_SSID,
        wifi_security=WifiSecurity.WPA2_ENTERPRISE,
        identity=scep,
        trusted_server_names=RADIUS_SERVER_NAME,
    )
    ProfileAssignment.objects.create(profile=profile, group=group)
    record_change(obj=profile, before=None, actor=admin, message="created by bootstrap --demo")
    return profile, True


def _payload(profile: Profile, position: int, kind: str, name: str, **fields) -> ProfilePayload:
    payload = ProfilePayload(
        profile=profile, position=position, kind=kind, display_name=name, **fields
    )
    payload.full_clean()
    payload.save()
    return payload


def _ensure_code(
    owner: AbstractBaseUser, group: DeviceGroup, admin: AbstractBaseUser
) -> tuple[str | None, bool]:
    """The multi-use code; shown while usable. Like the API token, a revoked one is
    neither shown nor made again."""
    code = derive_secret("enrollment_code")
    row = EnrollmentCode.objects.filter(code_hash=hash_token(code)).first()
    if row is not None:
        return (code if row.state() == "usable" else None), False
    row = EnrollmentCode.objects.create(
        name=ENROLLMENT_CODE_NAME,
        prefix=code[:CODE_PREFIX_LENGTH],
        code_hash=hash_token(code),
        owner=owner,
        group=group,
        max_uses=None,
    )
    record_change(obj=row, before=None, actor=admin, message="created by bootstrap --demo")
    return code, True
