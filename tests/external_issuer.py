"""An external SCEP CA whose key the test holds: a CA server of kind ``scep`` pinned to a
fresh CA certificate, and ``issue`` to sign what that CA would have issued to a device.
For the tests of what mdmcerts does with such certificates once a device reports them
(inventory learning, "revoke at the CA") without running an enrollment each time; the
enrollments themselves run against micromdm's scepserver in ``tests/e2e``.
"""

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from apps.enrollment.choices import ChallengeType, ExternalDelivery
from apps.enrollment.models import CertificateTemplate
from apps.pki import crypto, external
from apps.pki.choices import ExternalChallengeType, KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Profile
from apps.profiles.services import assign
from tests.factories import force_template, random_name, self_signed_ca
from tests.profiles.factories import force_payload, force_profile

SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"


@dataclass
class ExternalIssuer:
    """The CA server row and the CA's key."""

    ca: CertificateAuthority
    key: ec.EllipticCurvePrivateKey

    def issue(
        self, subject: str, *, days: int = 365, key=None, now: datetime.datetime | None = None
    ) -> x509.Certificate:
        """A certificate for ``subject`` (as templates write it, most significant first)
        signed by this CA (or by ``key``, to forge one), valid ``days`` from ``now``."""
        now = now or datetime.datetime.now(datetime.UTC)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateBuilder()
            .subject_name(crypto.build_name(crypto.parse_name_pattern(subject)))
            .issuer_name(self.ca.certificate.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key or self.key, hashes.SHA256())
        )


def force_external_issuer(**fields) -> ExternalIssuer:
    """A CA server of kind ``scep`` (a URL nothing listens on, static challenge) pinned to
    a fresh CA certificate whose key the test holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = random_name("external")
    fields.setdefault("scep_challenge_type", ExternalChallengeType.STATIC)
    ca = CertificateAuthority(
        name=name, slug=name, scep_url="http://127.0.0.1:9/certsrv/mscep/mscep.dll", **fields
    )
    ca.set_secret("scep_static_challenge", "external-secret")
    external.pin(ca, [self_signed_ca(key)])
    return ExternalIssuer(external.save_external_ca(ca, before=None), key)


def external_template(
    ca: CertificateAuthority, mode: str = ExternalDelivery.DELEGATE, **fields
) -> CertificateTemplate:
    fields.setdefault("subject", SUBJECT)
    return force_template(
        ca=ca,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        external_delivery=mode,
        **fields,
    )


def carrying_profile(template: CertificateTemplate, device) -> Profile:
    """A profile for any platform whose SCEP payload uses ``template``, assigned to
    ``device``."""
    profile = force_profile(platform="any")
    force_payload(profile, PayloadKind.SCEP, display_name="External identity", template=template)
    assign(profile=profile, device=device)
    profile.refresh_from_db()
    return profile


def pem_entry(certificate: x509.Certificate) -> dict[str, str]:
    """An installed-certificate entry of a check-in, as the agent reports it."""
    return {"pem": crypto.cert_pem(certificate)}
