import base64

import pytest
from django.test import override_settings

from apps.core import secrets
from apps.core.rewrap import rewrap_all
from apps.enrollment.models import CertificateTemplate
from apps.pki.models import CertificateAuthority
from tests.factories import force_ca, force_certificate, force_template

OLD = "old1:" + base64.urlsafe_b64encode(b"o" * 32).decode()
NEW = "new2:" + base64.urlsafe_b64encode(b"n" * 32).decode()


def test_it_round_trips_a_secret_bound_to_its_context():
    token = secrets.encrypt(b"top secret", context="app.model.field")
    assert token.startswith("mdmc1:")
    assert b"top secret" not in token.encode()
    assert secrets.decrypt(token, context="app.model.field") == b"top secret"


def test_it_refuses_a_secret_moved_to_another_field():
    token = secrets.encrypt(b"top secret", context="app.model.a")
    with pytest.raises(secrets.SecretError):
        secrets.decrypt(token, context="app.model.b")


def test_it_refuses_an_altered_ciphertext():
    token = secrets.encrypt(b"top secret", context="c")
    body = token.rsplit(":", 1)[1]
    altered = token[: -len(body)] + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(secrets.SecretError):
        secrets.decrypt(altered, context="c")


@pytest.mark.parametrize(
    "kek, message",
    [
        ("", "empty"),
        ("nokeyid", "<key id>:<base64 key>"),
        ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "32 bytes"),
        ("k1:!!!notbase64", "base64"),
    ],
)
def test_it_explains_a_malformed_kek(kek, message):
    with pytest.raises(secrets.KEKConfigurationError, match=message):
        secrets.parse_kek(kek)


@override_settings(MDMCERTS_KEK=OLD)
def test_a_secret_under_an_unknown_key_id_names_the_key_id():
    token = secrets.encrypt(b"x", context="c")
    with override_settings(MDMCERTS_KEK=NEW), pytest.raises(secrets.SecretError, match="old1"):
        secrets.decrypt(token, context="c")


@pytest.mark.django_db
def test_kek_rotation_rewraps_every_secret_and_keeps_every_key_usable(tmp_path):
    with override_settings(MDMCERTS_KEK=OLD):
        root = force_ca()
        intermediate = force_ca(parent=root, path_length=0)
        template = force_template(
            ca=intermediate, challenge_type="static", static_challenge="s3cret-challenge"
        )
    with override_settings(MDMCERTS_KEK=f"{NEW},{OLD}"):
        report = rewrap_all()
        assert report.rewrapped == {
            "pki.certificateauthority.private_key": 2,
            "enrollment.certificatetemplate.static_challenge": 1,
        }
        assert rewrap_all().total == 0  # a second run finds nothing left to do
    # The old key is gone: everything still works under the new one alone.
    with override_settings(MDMCERTS_KEK=NEW):
        for ca in CertificateAuthority.objects.all():
            assert secrets.key_id_of(ca.private_key) == "new2"
        template = CertificateTemplate.objects.get(pk=template.pk)
        assert template.reveal_static_challenge() == "s3cret-challenge"
        cert = force_certificate(template=template)
        assert cert.certificate.issuer == intermediate.certificate.subject
        child = force_ca(parent=CertificateAuthority.objects.get(pk=root.pk), path_length=0)
        assert child.certificate.issuer == root.certificate.subject


@pytest.mark.django_db
def test_rewrap_secrets_command_reports_what_it_did():
    from io import StringIO

    from django.core.management import call_command

    with override_settings(MDMCERTS_KEK=OLD):
        force_ca()
    out = StringIO()
    with override_settings(MDMCERTS_KEK=f"{NEW},{OLD}"):
        call_command("rewrap_secrets", stdout=out)
    assert "pki.certificateauthority.private_key: 1 rewrapped" in out.getvalue()
    assert "1 secrets rewrapped under key 'new2'" in out.getvalue()


def test_a_malformed_kek_stops_the_system_checks():
    from apps.core.checks import kek_is_well_formed

    assert kek_is_well_formed(None) == []
    with override_settings(MDMCERTS_KEK="k1:tooshort"):
        (error,) = kek_is_well_formed(None)
    assert error.id == "mdmcerts.E001" and "32 bytes" in error.msg
