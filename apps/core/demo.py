"""The demo set-up behind ``manage.py bootstrap --demo``: an admin, an API token, a local
root CA and a request template, so that a fresh checkout can be tried at once.

Every demo secret (the admin password, the API token key, the static challenge) is
derived from ``SECRET_KEY`` with HMAC-SHA256 of a fixed label. A second run therefore
prints the same values without storing them anywhere, and creates nothing new. Whoever
knows ``SECRET_KEY`` can already forge sessions, so the derivation gives nothing away;
still, the demo is for development machines, not production.
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
from apps.enrollment.choices import ChallengeType, ExtendedKeyUsage, SanType, SubjectSource
from apps.enrollment.models import CertificateTemplate
from apps.pki.choices import KeyAlgorithm, SignatureHash
from apps.pki.models import CertificateAuthority
from apps.pki.services import generate_local_ca

ADMIN_USERNAME = "admin"
ADMIN_EMAIL = "admin@example.com"
CA_NAME = "mdmcerts Demo Root CA"
CA_SLUG = "demo-root"
CA_SUBJECT = f"O=mdmcerts demo,CN={CA_NAME}"
TEMPLATE_NAME = "Demo device certificate"
TEMPLATE_SLUG = "demo"
TEMPLATE_SUBJECT = "O=mdmcerts demo,CN=$USERID$"
TOKEN_NAME = "demo"  # noqa: S105 (the token's label, not its key)

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
    password = derive_secret("admin_password")
    return DemoSetup(
        admin=admin,
        admin_password=password if admin.check_password(password) else None,
        api_token=api_token,
        ca=ca,
        template=template,
        static_challenge=template.reveal_static_challenge() or None,
        created=tuple(created),
    )


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
