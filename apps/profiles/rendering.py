"""Rendering a profile for one device: the neutral JSON and the Apple .mobileconfig.

Variables in payload text fields and in the SCEP subject/SANs are filled with the device's
values; a variable without a value raises ``VariableValueMissing`` and nothing is
rendered. Dynamic challenges are minted by the caller (delivery) and passed in by payload
UUID; static challenges are revealed here, only into the rendered profile. A SCEP payload
of an external SCEP CA's template enrolls with that CA: at its own URL (delegate) or
through the device's SCEP proxy URL (proxy), with the CA's challenge (its static one,
revealed here, or a dynamic one the caller fetched from it). Likewise the
server-generated identity of each PKCS#12 payload is chosen (or generated) by the caller
and passed in by payload UUID; it is put into a PKCS#12 under a fresh random password
here, in memory. Without one the profile is not renderable: an identity's key goes to its
device at check-in, never into a download.
"""

import base64
import plistlib
import uuid
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings

from apps.certificates.identities import new_password, pkcs12_bundle
from apps.certificates.models import Identity
from apps.enrollment.choices import ChallengeType, ExternalDelivery, KeyGeneration, SubjectSource
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import render_subject
from apps.enrollment.variables import LookupValues, render, values_for
from apps.pki import crypto
from apps.pki.choices import CAKind, ExternalChallengeType
from apps.profiles.choices import PKCS12_PAYLOAD_KINDS, PayloadKind
from apps.profiles.models import APPLE_SCEP_KEY_ALGORITHMS, Profile, ProfilePayload
from apps.profiles.signing import ProfileSigningError, sign_profile
from apps.scep.proxy import proxy_url

APPLE_KEY_SIZES = set(APPLE_SCEP_KEY_ALGORITHMS.values())
APPLE_SAN_KEYS = {
    "rfc822": "rfc822Name",
    "dns": "dNSName",
    "uri": "uniformResourceIdentifier",
    "upn": "ntPrincipalName",
}
ORGANIZATION = "mdmcerts"


class ProfileNotRenderable(Exception):
    """The profile cannot be rendered for this device; the message says why."""


def scep_url(template: CertificateTemplate, *, device=None, profile: Profile | None = None) -> str:
    """Where a SCEP payload of ``template`` enrolls: mdmcerts' endpoint of the template;
    for an external SCEP CA, the CA itself (delegate) or the device's proxy URL (proxy)."""
    if template.ca.kind == CAKind.SCEP:
        if template.external_delivery == ExternalDelivery.DELEGATE:
            if not template.ca.scep_url:
                raise ProfileNotRenderable(f"CA server {template.ca} has no SCEP URL")
            return template.ca.scep_url
        if template.external_delivery == ExternalDelivery.PROXY:
            return proxy_url(device=device, template=template, profile=profile)
    return f"{settings.PUBLIC_BASE_URL}/scep/{template.slug}/pkiclient.exe"


def _scep(
    payload: ProfilePayload,
    values: LookupValues,
    challenges: Mapping,
    *,
    device,
    profile: Profile,
) -> dict:
    template = payload.template
    if template.key_generation == KeyGeneration.SERVER:
        raise ProfileNotRenderable(
            f"SCEP payload {payload.display_name!r}: request template {template} generates "
            "keys on the server; deliver it as a PKCS#12 identity payload"
        )
    subject = render_subject(template, values)
    sans = [
        [row.san_type, render(row.value, values, where=f"{row.get_san_type_display()} SAN")]
        for row in template.san_rows.all()
    ]
    kind, bits = crypto.KEY_STRENGTH[template.key_algorithm]
    external = template.ca.kind == CAKind.SCEP
    challenge = (
        _external_challenge(payload, challenges) if external else _challenge(payload, challenges)
    )
    body = {
        "url": scep_url(template, device=device, profile=profile),
        "name": template.ca.name,
        "challenge": challenge,
        "subject": [
            [crypto.SHORT_NAMES.get(a.oid, a.oid.dotted_string), str(a.value)]
            for rdn in subject.rdns
            for a in rdn
        ],
        "subject_alt_names": sans,
        "key_type": kind,
        "key_size": bits,
        "key_usage": {
            "digital_signature": template.key_usage_digital_signature,
            "key_encipherment": template.key_usage_key_encipherment,
        },
        "retries": template.max_failed_attempts,
        "retry_delay": template.retry_interval_seconds,
        "ca_fingerprint_sha256": template.ca.fingerprint_sha256,
        "ca_fingerprint_sha1": template.ca.certificate.fingerprint(
            hashes.SHA1()  # noqa: S303 (what Apple devices compare; identifies, does not secure)
        ).hex(),
    }
    if external:
        body.update(_external_polling(template))
    return body


def _challenge(payload: ProfilePayload, challenges: Mapping) -> str:
    """The challenge of a template of mdmcerts' own CA: static, or minted by the caller."""
    template = payload.template
    if template.challenge_type == ChallengeType.STATIC:
        return template.reveal_static_challenge()
    if template.challenge_type == ChallengeType.DYNAMIC:
        challenge = challenges.get(payload.uuid, "")
        if not challenge:
            raise ProfileNotRenderable(f"no challenge was minted for {payload}")
        return challenge
    return ""


def _external_challenge(payload: ProfilePayload, challenges: Mapping) -> str:
    """The challenge an external SCEP CA expects (the device's request goes to it, or is
    relayed to it unchanged): its static one, or a dynamic one the caller fetched from
    it just in time."""
    ca = payload.template.ca
    if ca.scep_challenge_type == ExternalChallengeType.STATIC:
        return ca.reveal_secret("scep_static_challenge")
    if ca.scep_challenge_type == ExternalChallengeType.DYNAMIC:
        challenge = challenges.get(payload.uuid, "")
        if not challenge:
            raise ProfileNotRenderable(
                f"SCEP payload {payload.display_name!r}: CA server {ca} hands out one-time "
                "challenges; the challenge is fetched when the profile is delivered to its "
                "device, so the profile cannot be downloaded by hand"
            )
        return challenge
    return ""


def _external_polling(template: CertificateTemplate) -> dict:
    """How a device polls an external CA that answers PENDING, and whether it may read
    the CA's single-DES answers: as the CA server says (micromdm's scepserver 2.1
    answers with nothing else)."""
    ca = template.ca
    return {
        "retries": ca.scep_max_pending_retries,
        "retry_delay": ca.scep_retry_seconds,
        "accept_single_des_replies": ca.scep_allow_single_des,
    }


def _pkcs12(
    payload: ProfilePayload, identities: Mapping[uuid.UUID, Identity], *, for_apple: bool
) -> dict:
    identity = identities.get(payload.uuid)
    if identity is None:
        raise ProfileNotRenderable(
            f"{payload.label()}: an identity is "
            "delivered to its device at check-in only, never in a download"
        )
    password = new_password()
    bundle = pkcs12_bundle(identity, password=password, for_apple=for_apple)
    certificate = identity.certificate
    return {
        "data": base64.b64encode(bundle).decode(),
        "password": password,
        "source": certificate.source,
        "file_name": f"{_file_stem(payload)}-{certificate.serial[:16]}.p12",
        "fingerprint_sha256": certificate.fingerprint_sha256,
        "subject": certificate.subject,
        "not_after": certificate.not_after.isoformat(),
    }


def _file_stem(payload: ProfilePayload) -> str:
    if payload.kind == PayloadKind.USER_PROVIDED:
        return payload.user_identity_purpose.replace("_", "-")
    if payload.kind == PayloadKind.SINGLE_FILE:
        return payload.ca.slug
    return payload.template.slug


def _trusted(payload: ProfilePayload) -> dict:
    return {"certificates_pem": [crypto.cert_pem(c) for c in payload.ca.chain()]}


def _wifi(payload: ProfilePayload, trusted_uuids: list[str]) -> dict:
    return {
        "ssid": payload.ssid,
        "hidden_network": payload.hidden_network,
        "auto_join": payload.auto_join,
        "security": payload.wifi_security,
        "eap_type": "tls",
        "identity_payload_uuid": str(payload.identity.uuid),
        "trusted_server_names": payload.trusted_server_names.split(),
        "trusted_certificate_payload_uuids": trusted_uuids,
    }


def _vpn(payload: ProfilePayload, values: LookupValues) -> dict:
    return {
        "type": payload.vpn_type,
        "server": render(payload.server, values, where="VPN server"),
        "remote_identifier": render(
            payload.remote_identifier, values, where="VPN remote identifier"
        ),
        "account": render(payload.account, values, where="VPN account"),
        "identity_payload_uuid": str(payload.identity.uuid),
    }


def _email(payload: ProfilePayload, values: LookupValues) -> dict:
    return {
        "host": render(payload.host, values, where="email host"),
        "use_ssl": payload.use_ssl,
        "email_address": render(payload.email_address, values, where="email address"),
        "user_name": render(payload.user_name, values, where="email user name"),
        "identity_payload_uuid": str(payload.identity.uuid),
    }


def neutral_profile(
    profile: Profile,
    *,
    device,
    challenges: Mapping[uuid.UUID, str],
    identities: Mapping[uuid.UUID, Identity] | None = None,
) -> dict:
    """The profile for ``device`` in the neutral JSON format (docs/device-api.md)."""
    return _render_neutral(
        profile, device=device, challenges=challenges, identities=identities or {}
    )[0]


def _render_neutral(
    profile: Profile,
    *,
    device,
    challenges: Mapping[uuid.UUID, str],
    identities: Mapping[uuid.UUID, Identity],
    for_apple: bool = False,
) -> tuple[dict, dict[str, ProfilePayload]]:
    values = values_for(device=device)
    payloads = list(
        profile.payloads.select_related("template__ca", "ca", "identity").prefetch_related(
            "template__san_rows"
        )
    )
    trusted = [str(p.uuid) for p in payloads if p.kind == PayloadKind.TRUSTED_CERTIFICATE]
    rendered = []
    for payload in payloads:
        body = {
            PayloadKind.SCEP: lambda p=payload: _scep(
                p, values, challenges, device=device, profile=profile
            ),
            PayloadKind.PKCS12: lambda p=payload: _pkcs12(p, identities, for_apple=for_apple),
            PayloadKind.USER_PROVIDED: lambda p=payload: _pkcs12(
                p, identities, for_apple=for_apple
            ),
            PayloadKind.SINGLE_FILE: lambda p=payload: _pkcs12(p, identities, for_apple=for_apple),
            PayloadKind.TRUSTED_CERTIFICATE: lambda p=payload: _trusted(p),
            PayloadKind.WIFI: lambda p=payload: _wifi(p, trusted),
            PayloadKind.VPN: lambda p=payload: _vpn(p, values),
            PayloadKind.EMAIL: lambda p=payload: _email(p, values),
        }[payload.kind]()
        # Devices install every identity mdmcerts holds the key of the same way.
        kind = PayloadKind.PKCS12 if payload.kind in PKCS12_PAYLOAD_KINDS else payload.kind
        rendered.append(
            {
                "uuid": str(payload.uuid),
                "kind": kind,
                "display_name": payload.display_name,
                kind: body,
            }
        )
    neutral = {
        "identifier": profile.identifier,
        "uuid": str(profile.uuid),
        "name": profile.name,
        "description": profile.description,
        "version": profile.version,
        "payloads": rendered,
    }
    return neutral, {str(p.uuid): p for p in payloads}


def mobileconfig(
    profile: Profile,
    *,
    device,
    challenges: Mapping[uuid.UUID, str],
    identities: Mapping[uuid.UUID, Identity] | None = None,
) -> bytes:
    """The profile for an Apple ``device`` as an XML property list (.mobileconfig), signed
    (CMS SignedData, DER) when the profile has a signing CA.

    PayloadUUIDs are the stored UUIDs of the profile and its payloads, so every rendering
    of a profile has the same ones and a device replaces what it installed before.
    """
    neutral, payloads = _render_neutral(
        profile,
        device=device,
        challenges=challenges,
        identities=identities or {},
        for_apple=True,
    )
    content, anchors = [], {}
    for item in neutral["payloads"]:
        rendered = _apple_payloads(profile, item, anchors, payloads[item["uuid"]])
        if item["kind"] == PayloadKind.TRUSTED_CERTIFICATE:
            anchors[item["uuid"]] = [p["PayloadUUID"] for p in rendered]
        content.extend(rendered)
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": profile.identifier,
        "PayloadUUID": str(profile.uuid).upper(),
        "PayloadDisplayName": profile.name,
        "PayloadDescription": profile.description,
        "PayloadOrganization": ORGANIZATION,
        "PayloadContent": content,
    }
    plist = plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)
    if profile.signing_ca_id is None:
        return plist
    try:
        return sign_profile(plist, ca=profile.signing_ca)
    except ProfileSigningError as exc:
        raise ProfileNotRenderable(f"profile {profile} cannot be signed: {exc}") from exc


def _common(profile: Profile, item: dict, payload_type: str, suffix: str = "") -> dict:
    payload_uuid = (
        str(item["uuid"]).upper()
        if not suffix
        else str(uuid.uuid5(uuid.UUID(item["uuid"]), suffix)).upper()
    )
    return {
        "PayloadType": payload_type,
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{profile.identifier}.{payload_uuid}",
        "PayloadUUID": payload_uuid,
        "PayloadDisplayName": item["display_name"],
        "PayloadOrganization": ORGANIZATION,
    }


def _apple_payloads(
    profile: Profile, item: dict, anchors: dict[str, list[str]], payload: ProfilePayload
) -> list[dict]:
    kind = item["kind"]
    if kind == PayloadKind.SCEP:
        return [
            {
                **_common(profile, item, "com.apple.security.scep"),
                "PayloadContent": _apple_scep(item["scep"], payload),
            }
        ]
    if kind == PayloadKind.PKCS12:
        return [{**_common(profile, item, "com.apple.security.pkcs12"), **_apple_pkcs12(item)}]
    if kind == PayloadKind.TRUSTED_CERTIFICATE:
        return _apple_trust(profile, item)
    if kind == PayloadKind.WIFI:
        return [
            {
                **_common(profile, item, "com.apple.wifi.managed"),
                **_apple_wifi(item["wifi"], anchors),
            }
        ]
    if kind == PayloadKind.VPN:
        return [
            {
                **_common(profile, item, "com.apple.vpn.managed"),
                **_apple_vpn(item["vpn"], name=item["display_name"]),
            }
        ]
    return [{**_common(profile, item, "com.apple.eas.account"), **_apple_eas(item["email"])}]


def _apple_scep(scep: dict, payload: ProfilePayload) -> dict:
    if scep["key_type"] != "rsa" or scep["key_size"] not in APPLE_KEY_SIZES:
        raise ProfileNotRenderable(
            f"SCEP payload {payload.display_name!r}: Apple devices enroll RSA 2048 or 4096 "
            f"keys only, and request template {payload.template} asks for "
            f"{payload.template.get_key_algorithm_display()}; change the template's key type "
            "and size, or use another template"
        )
    usage = (1 if scep["key_usage"]["digital_signature"] else 0) | (
        4 if scep["key_usage"]["key_encipherment"] else 0
    )
    content = {
        "URL": scep["url"],
        "Name": scep["name"],
        "Keysize": scep["key_size"],
        "Key Type": "RSA",
        "Key Usage": usage,
        "Retries": scep["retries"],
        "RetryDelay": scep["retry_delay"],
        "Subject": [[[oid, value]] for oid, value in scep["subject"]],
        # Apple devices match the SHA-1 (or MD5) fingerprint of the CA they get from
        # GetCACert; SHA-1 is the one every iOS and macOS version accepts.
        "CAFingerprint": bytes.fromhex(scep["ca_fingerprint_sha1"]),
    }
    if scep["challenge"]:
        content["Challenge"] = scep["challenge"]
    sans = _apple_sans(scep["subject_alt_names"], payload)
    if sans:
        content["SubjectAltName"] = sans
    return content


def _apple_sans(pairs: list[list[str]], payload: ProfilePayload) -> dict[str, str]:
    """One string per SAN type, as the schema types them. A template that renders its own
    SANs gets all of them into the certificate whatever the CSR asks for, so a second
    value of a type is left out of the request; a template that takes SANs from the
    request would lose it, so that profile is refused."""
    sans: dict[str, str] = {}
    for san_type, value in pairs:
        key = APPLE_SAN_KEYS[san_type]
        if key in sans and payload.template.subject_source == SubjectSource.REQUEST:
            raise ProfileNotRenderable(
                f"SCEP payload {payload.display_name!r}: Apple's SCEP payload asks for one "
                f"{key} SAN, and request template {payload.template} takes its SANs from the "
                "request with more than one"
            )
        sans.setdefault(key, value)
    return sans


def _apple_pkcs12(item: dict) -> dict:
    bundle = item["pkcs12"]
    return {
        "PayloadCertificateFileName": bundle["file_name"],
        "PayloadContent": base64.b64decode(bundle["data"]),
        "Password": bundle["password"],
    }


def _apple_trust(profile: Profile, item: dict) -> list[dict]:
    """The root as com.apple.security.root, every other CA as com.apple.security.pem."""
    payloads = []
    for index, pem in enumerate(item["trusted_certificate"]["certificates_pem"]):
        cert = crypto.load_pem_certificate(pem)
        is_root = cert.issuer == cert.subject
        payload_type = "com.apple.security.root" if is_root else "com.apple.security.pem"
        body = cert.public_bytes(serialization.Encoding.DER) if is_root else pem.encode()
        common = _common(profile, item, payload_type, suffix=f"cert-{index}" if index else "")
        file_name = f"{cert.fingerprint(hashes.SHA256()).hex()[:16]}.{'cer' if is_root else 'pem'}"
        payloads.append({**common, "PayloadCertificateFileName": file_name, "PayloadContent": body})
    return payloads


def _apple_wifi(wifi: dict, anchors: dict[str, list[str]]) -> dict:
    """EAP-TLS with the SCEP identity; trust anchors are the trusted-certificate payloads
    rendered before this one."""
    eap = {
        "AcceptEAPTypes": [13],
        "TLSTrustedServerNames": wifi["trusted_server_names"],
        "PayloadCertificateAnchorUUID": [
            anchor
            for payload_uuid in wifi["trusted_certificate_payload_uuids"]
            for anchor in anchors.get(payload_uuid, [])
        ],
    }
    return {
        "SSID_STR": wifi["ssid"],
        "HIDDEN_NETWORK": wifi["hidden_network"],
        "AutoJoin": wifi["auto_join"],
        "EncryptionType": "WPA3" if wifi["security"] == "wpa3_enterprise" else "WPA2",
        "PayloadCertificateUUID": wifi["identity_payload_uuid"].upper(),
        "EAPClientConfiguration": eap,
    }


def _apple_vpn(vpn: dict, *, name: str) -> dict:
    identity = vpn["identity_payload_uuid"].upper()
    if vpn["type"] == "ikev2":
        return {
            "VPNType": "IKEv2",
            "UserDefinedName": name,
            "IKEv2": {
                "RemoteAddress": vpn["server"],
                "RemoteIdentifier": vpn["remote_identifier"] or vpn["server"],
                "LocalIdentifier": vpn["account"] or vpn["server"],
                "AuthenticationMethod": "Certificate",
                "PayloadCertificateUUID": identity,
            },
        }
    if vpn["type"] == "anyconnect":
        # The schema's VPN dictionary has no server or account keys: for VPNType "VPN"
        # they go in the PPP dictionary, as CommRemoteAddress and AuthName.
        ppp = {"CommRemoteAddress": vpn["server"]}
        if vpn["account"]:
            ppp["AuthName"] = vpn["account"]
        return {
            "VPNType": "VPN",
            "VPNSubType": "com.cisco.anyconnect",
            "UserDefinedName": name,
            "VPN": {"AuthenticationMethod": "Certificate", "PayloadCertificateUUID": identity},
            "PPP": ppp,
        }
    ipsec = {
        "RemoteAddress": vpn["server"],
        "AuthenticationMethod": "Certificate",
        "PayloadCertificateUUID": identity,
    }
    if vpn["account"]:
        ipsec.update(XAuthEnabled=1, XAuthName=vpn["account"])
    return {"VPNType": "IPSec", "UserDefinedName": name, "IPSec": ipsec}


def _apple_eas(email: dict) -> dict:
    content = {
        "Host": email["host"],
        "SSL": email["use_ssl"],
        "EmailAddress": email["email_address"],
        "PayloadCertificateUUID": email["identity_payload_uuid"].upper(),
    }
    if email["user_name"]:
        content["UserName"] = email["user_name"]  # absent: the device asks the user
    return content
