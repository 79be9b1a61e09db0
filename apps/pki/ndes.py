"""Dynamic challenges from Microsoft NDES (the ``mscep_admin`` page).

NDES hands out one-time challenge passwords on an HTML page behind Windows
authentication: each GET of ``http(s)://host/certsrv/mscep_admin/`` by an account with
enroll permission creates one and shows it as "The enrollment challenge password is:
<B> … </B>". Some NDES versions send the page in UTF-16.

Authentication is HTTP Basic only: NTLM and Negotiate (Kerberos) are not supported, so
Basic authentication must be enabled on the ``mscep_admin`` IIS application (over https,
since Basic sends the password with each request).

NDES's registry value ``PasswordLength`` (default 8) counts bytes; the page shows them
in hexadecimal, so a default challenge has 16 characters, which is this module's default
for the CA server's "SCEP challenge length". The password is never logged; errors name
the page's host, never the account's password.
"""

import base64
import re

from apps.pki.backends.http import HttpFailure, describe, request, tls_context

LABELLED_CHALLENGE = re.compile(
    r"enrollment\s+challenge\s+password\s+is\s*:?\s*<b>\s*([^<\s]+)\s*</b>", re.IGNORECASE
)
BOLD_HEX = re.compile(r"<b>\s*([0-9A-F]+)\s*</b>", re.IGNORECASE)
CACHE_FULL = "password cache is full"
NO_PERMISSION = "do not have sufficient permission"


class NdesError(Exception):
    """No challenge could be had from NDES; the message is safe to show."""


def fetch_challenge(
    *,
    url: str,
    username: str,
    password: str,
    expected_length: int,
    timeout: float,
    trust_bundle_pem: str = "",
) -> str:
    """A fresh one-time challenge from the NDES ``mscep_admin`` page at ``url``."""
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    try:
        response = request(
            "GET",
            url,
            timeout=timeout,
            tls=tls_context(trust_bundle_pem),
            headers={"Authorization": f"Basic {credentials}", "Accept": "text/html"},
        )
    except HttpFailure as exc:
        raise NdesError(f"NDES challenge page: {exc}") from None
    if response.status == 401:
        raise NdesError(
            f"NDES refused the credentials of {username!r} at {describe(url)} (HTTP 401; "
            "Basic authentication must be enabled on mscep_admin)"
        )
    if response.status != 200:
        raise NdesError(f"NDES challenge page {describe(url)} answered HTTP {response.status}")
    return challenge_from_page(decode_page(response.body), expected_length=expected_length)


def decode_page(body: bytes) -> str:
    """The page as text: UTF-16 (with a BOM, or recognisable by its NUL bytes) or UTF-8."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", errors="replace")
    if body.count(b"\x00") > len(body) // 4:
        # UTF-16 without a BOM: ASCII text has a NUL in every other byte.
        encoding = "utf-16-le" if body[1:2] == b"\x00" else "utf-16-be"
        return body.decode(encoding, errors="replace")
    return body.decode("utf-8", errors="replace")


def challenge_from_page(page: str, *, expected_length: int) -> str:
    """The challenge shown on an ``mscep_admin`` page; ``NdesError`` for NDES's own
    refusals (password cache full, no permission) and pages without one."""
    lowered = page.lower()
    if CACHE_FULL in lowered:
        raise NdesError(
            "NDES's password cache is full: challenges are fetched faster than devices use "
            "them. They expire after PasswordValidity (60 minutes by default); NDES's "
            "PasswordMax raises the cache size."
        )
    if NO_PERMISSION in lowered:
        raise NdesError(
            "NDES says the challenge account has no permission to enroll with SCEP: give it "
            "Enroll permission on the NDES certificate templates (or make it an NDES admin)."
        )
    found = LABELLED_CHALLENGE.search(page) or _only_bold_hex(page, expected_length)
    if found is None:
        raise NdesError(
            "the NDES page holds no enrollment challenge password; is the challenge URL "
            "the mscep_admin page (http(s)://host/certsrv/mscep_admin/)?"
        )
    challenge = found.group(1)
    if len(challenge) != expected_length:
        raise NdesError(
            f"the NDES challenge has {len(challenge)} characters where the CA server's SCEP "
            f"challenge length says {expected_length}"
        )
    return challenge


def _only_bold_hex(page: str, expected_length: int) -> re.Match | None:
    """A localized page (no English label): its one bold hexadecimal token of the
    expected length, if there is exactly one."""
    matches = [m for m in BOLD_HEX.finditer(page) if len(m.group(1)) == expected_length]
    return matches[0] if len(matches) == 1 else None
