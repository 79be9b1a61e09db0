"""Lookup variables in subjects, SANs and profile text.

The canonical form is Ivanti's ``$NAME$``. ManageEngine's ``%name%`` and Workspace ONE's
``{Name}`` are aliases, so a template pasted from those consoles works unchanged. Names
match case-insensitively. A variable with no value never renders as an empty or literal
field: rendering raises ``VariableValueMissing``.
"""

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ObjectDoesNotExist, ValidationError

CANONICAL: dict[str, str] = {
    "EMAIL": "user's email address",
    "USERID": "user name",
    "FIRST_NAME": "user's first name",
    "LAST_NAME": "user's last name",
    "DISPLAY_NAME": "user's display name",
    "USER_DN": "user's distinguished name",
    "USER_SID": "user's security identifier",
    "USER_UPN": "user principal name",
    "USER_LOCALE": "user's locale",
    "DEVICE_UUID": "device UUID",
    "DEVICE_UUID_NO_DASHES": "device UUID without dashes",
    "DEVICE_UDID": "device UDID",
    "DEVICE_IMSI": "device IMSI",
    "DEVICE_IMEI": "device IMEI",
    "DEVICE_SN": "device serial number",
    "DEVICE_ID": "mdmcerts device id",
    "DEVICE_MAC": "device Wi-Fi MAC address",
    "DEVICE_CLIENT_ID": "device client id",
    "USER_CUSTOM1": "user custom attribute 1",
    "USER_CUSTOM2": "user custom attribute 2",
    "USER_CUSTOM3": "user custom attribute 3",
    "USER_CUSTOM4": "user custom attribute 4",
    "REALM": "user's realm (domain)",
    "TIMESTAMP_MS": "issuance time, milliseconds since 1970",
    "RANDOM_16": "16 random hex characters",
    "RANDOM_32": "32 random hex characters",
    "RANDOM_64": "64 random hex characters",
    "CONFIG_UUID": "the delivering configuration's UUID",
    # Beyond Ivanti's list, for the aliases of the other consoles:
    "DEVICE_NAME": "device name",
    "EMAIL_DOMAIN": "domain part of the email address",
    "EMAIL_LOCAL_PART": "part of the email address before @",
}

MANAGEENGINE_ALIASES = {
    "username": "USERID",
    "email": "EMAIL",
    "firstname": "FIRST_NAME",
    "lastname": "LAST_NAME",
    "displayname": "DISPLAY_NAME",
    "domainname": "REALM",
    "devicename": "DEVICE_NAME",
    "serialnumber": "DEVICE_SN",
    "udid": "DEVICE_UDID",
    "imei": "DEVICE_IMEI",
    "deviceid": "DEVICE_ID",
    "upn": "USER_UPN",
}
WORKSPACE_ONE_ALIASES = {
    "EnrollmentUser": "USERID",
    "DeviceUid": "DEVICE_UDID",
    "EmailAddress": "EMAIL",
    "EmailDomain": "EMAIL_DOMAIN",
    "EmailUserName": "EMAIL_LOCAL_PART",
    "DeviceSerialNumber": "DEVICE_SN",
    "DeviceFriendlyName": "DEVICE_NAME",
    "DeviceImei": "DEVICE_IMEI",
    "DeviceWLANMac": "DEVICE_MAC",
    "DeviceId": "DEVICE_ID",
    "UserPrincipalName": "USER_UPN",
    "UserDistinguishedName": "USER_DN",
    "FirstName": "FIRST_NAME",
    "LastName": "LAST_NAME",
    "DisplayName": "DISPLAY_NAME",
    "Domain": "REALM",
}
_LOOKUP = {
    "$": {name.lower(): name for name in CANONICAL},
    "%": {alias.lower(): name for alias, name in MANAGEENGINE_ALIASES.items()},
    "{": {alias.lower(): name for alias, name in WORKSPACE_ONE_ALIASES.items()},
}
VARIABLE_RE = re.compile(
    r"\$(?P<dollar>[A-Za-z][A-Za-z0-9_]*)\$"
    r"|%(?P<percent>[A-Za-z][A-Za-z0-9_]*)%"
    r"|\{(?P<brace>[A-Za-z][A-Za-z0-9_]*)\}"
)
_GROUP_SIGIL = {"dollar": "$", "percent": "%", "brace": "{"}


class VariableValueMissing(Exception):
    """A variable has no value for this device or user; the enrollment must fail."""

    def __init__(self, variable: str, where: str = "") -> None:
        self.variable = variable
        self.where = where
        place = f" (in {where})" if where else ""
        super().__init__(
            f"${variable}$ ({CANONICAL.get(variable, variable)}) has no value for this "
            f"device or user{place}"
        )


@dataclass(frozen=True)
class Occurrence:
    written: str
    canonical: str | None


def occurrences(text: str) -> list[Occurrence]:
    found = []
    for match in VARIABLE_RE.finditer(text or ""):
        group = match.lastgroup
        name = match.group(group)
        found.append(Occurrence(match.group(0), _LOOKUP[_GROUP_SIGIL[group]].get(name.lower())))
    return found


def unknown_variables(text: str) -> list[str]:
    return [occ.written for occ in occurrences(text) if occ.canonical is None]


def validate_variables(text: str) -> None:
    """Form and serializer validator: every variable in ``text`` must be known."""
    unknown = unknown_variables(text)
    if unknown:
        plural = "s" if len(set(unknown)) > 1 else ""
        raise ValidationError(
            f"Unknown variable{plural}: {', '.join(dict.fromkeys(unknown))}. Use $NAME$ "
            "variables such as $EMAIL$ or $DEVICE_SN$, or the %username% / {EnrollmentUser} "
            "forms.",
            code="unknown_variable",
        )


def render(text: str, values: Mapping[str, str], *, where: str = "") -> str:
    """Replace every variable by its value; a missing or empty value raises."""

    def substitute(match: re.Match) -> str:
        group = match.lastgroup
        canonical = _LOOKUP[_GROUP_SIGIL[group]].get(match.group(group).lower())
        if canonical is None:
            raise VariableValueMissing(match.group(0), where)
        value = values.get(canonical)
        if value is None or str(value).strip() == "":
            raise VariableValueMissing(canonical, where)
        return str(value)

    return VARIABLE_RE.sub(substitute, text)


@dataclass
class LookupValues(Mapping):
    """Values of the variables for one issuance: given ones plus derived and generated.

    Generated values (random, timestamp) are made once per issuance, so a variable used in
    the subject and in a SAN has the same value in both.
    """

    given: dict[str, str] = field(default_factory=dict)
    _generated: dict[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> str:
        value = self.given.get(name)
        if value not in (None, ""):
            return value
        if name not in self._generated:
            derived = self._derive(name)
            if derived in (None, ""):
                raise KeyError(name)
            self._generated[name] = derived
        return self._generated[name]

    def _derive(self, name: str) -> str | None:
        email = self.given.get("EMAIL") or ""
        if name == "TIMESTAMP_MS":
            return str(time.time_ns() // 1_000_000)
        if name.startswith("RANDOM_"):
            return secrets.token_hex(int(name.removeprefix("RANDOM_")) // 2)
        if name == "DEVICE_UUID_NO_DASHES" and self.given.get("DEVICE_UUID"):
            return self.given["DEVICE_UUID"].replace("-", "")
        if name == "EMAIL_DOMAIN" and "@" in email:
            return email.rpartition("@")[2]
        if name == "EMAIL_LOCAL_PART" and "@" in email:
            return email.rpartition("@")[0]
        return None

    def __iter__(self):
        return iter(CANONICAL)

    def __len__(self) -> int:
        return len(CANONICAL)


def values_for_user(user, **extra: str) -> LookupValues:
    """Lookup values from a Django user (and its directory attributes, if any)."""
    return values_for(user=user, **extra)


def values_for(*, user=None, device=None, **extra: str) -> LookupValues:
    """Lookup values for an issuance: the device's, its owner's (or ``user``'s), then extras."""
    given: dict[str, str] = {}
    user = user if user is not None else getattr(device, "owner", None)
    if user is not None:
        given.update(
            USERID=user.get_username(),
            EMAIL=user.email,
            FIRST_NAME=user.first_name,
            LAST_NAME=user.last_name,
            DISPLAY_NAME=user.get_full_name(),
        )
        attributes = _attributes_of(user)
        if attributes is not None:
            given.update({k: v for k, v in attributes.lookup_values().items() if v})
    if device is not None:
        given.update(device.lookup_values())
    given.update(extra)
    return LookupValues(given={k: str(v) for k, v in given.items() if v not in (None, "")})


def _attributes_of(user):
    try:
        return user.attributes
    except (AttributeError, ObjectDoesNotExist):
        return None
