"""No private key or challenge in clear in the database, its dump, the logs or the admin."""

import base64
import io
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.management import call_command
from django.db import connection

from apps.enrollment.services import mint_challenge
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ocsp_signer, ensure_ra, import_ca
from apps.profiles.signing import ensure_profile_signer
from tests.factories import (
    force_ca,
    force_certificate,
    force_template,
    make_key,
    self_signed_ca,
)

CHALLENGE = "static-challenge-Zq81"


def database_dump() -> bytes:
    """Every value of every table, read through the connection (no ORM, no model list)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


def forms_of(der: bytes) -> list[bytes]:
    """A DER key as it could appear: raw, base64, base64url, hex, and its inner 32 bytes."""
    return [
        der,
        base64.b64encode(der),
        base64.urlsafe_b64encode(der),
        der.hex().encode(),
        der.hex().upper().encode(),
        base64.b64encode(der[-48:]),
    ]


def imported_identity() -> tuple[bytes, bytes]:
    """A self-made CA as PKCS#12 (password "pw"), and its key's DER."""
    key = make_key("rsa2048")
    cert = self_signed_ca(key)
    p12 = pkcs12.serialize_key_and_certificates(
        b"imported", key, cert, None, serialization.BestAvailableEncryption(b"pw")
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return p12, der


@pytest.mark.django_db
def test_no_private_key_or_challenge_is_in_clear_anywhere(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    root = force_ca()
    intermediate = force_ca(parent=root, key_algorithm="rsa2048", path_length=0)
    p12, imported_der = imported_identity()
    imported = import_ca(
        ca=CertificateAuthority(name="Imported", slug="imported"), data=p12, password="pw"
    )
    template = force_template(ca=intermediate, challenge_type="static", static_challenge=CHALLENGE)
    force_certificate(template=template)
    dynamic = force_template(ca=intermediate, challenge_type="dynamic")
    _, minted = mint_challenge(template=dynamic)
    ra_holder = ensure_ra(intermediate)
    ocsp_holder = ensure_ocsp_signer(intermediate)
    profile_signer = ensure_profile_signer(intermediate)

    stored = [CertificateAuthority.objects.get(pk=ca.pk) for ca in (root, intermediate)]
    keys = [ca.load_private_key() for ca in stored] + [
        ra_holder.load_ra_key(),
        ocsp_holder.load_ocsp_key(),
        profile_signer.load_private_key(),
    ]
    key_ders = [imported_der] + [
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for key in keys
    ]
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    client.force_login(alice)
    pages = b"".join(
        client.get(url).content
        for url in (
            f"/admin/pki/certificateauthority/{imported.pk}/change/",
            f"/admin/pki/certificateauthority/{root.pk}/change/",
            f"/admin/enrollment/certificatetemplate/{template.pk}/change/",
            f"/admin/enrollment/certificatetemplate/{template.pk}/history/",
            "/admin/audit/auditevent/",
        )
    )
    places = {
        "database": database_dump(),
        "dumpdata": out.getvalue().encode(),
        "logs": caplog.text.encode(),
        "admin": pages,
    }
    for where, blob in places.items():
        assert b"PRIVATE KEY" not in blob, where
        assert CHALLENGE.encode() not in blob, where
        assert minted.encode() not in blob and minted[12:].encode() not in blob, where
        for der in key_ders:
            for form in forms_of(der):
                assert form not in blob, where
    # The check can fail: the keys are there, encrypted.
    assert places["database"].count(b"mdmc1:") >= 7
