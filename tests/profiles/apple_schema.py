"""Validating a rendered .mobileconfig against Apple's published profile schemas.

The schemas are Apple's YAML (apple/device-management, MIT licence), kept beside this
module in ``apple-profile-schemas/`` so the check runs in a fresh clone; they are a copy
of ``../shared/reference/apple-profile-schemas/`` (``test_apple_schemas`` compares them).

The top level is checked against ``TopLevel.yaml``; each payload against its
``PayloadType``'s schema together with ``CommonPayloadKeys.yaml``. Everywhere, recursively
into ``<dictionary>`` subkeys and ``<array>`` items: every key is defined, every value has
the schema's type, every ``presence: required`` key is there, values are in the
``rangelist``, strings match the ``format`` and arrays have the ``repetition`` asked for.
"""

import datetime
import plistlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).parent / "apple-profile-schemas"
ANY_KEY = "ANY"

PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "<string>": (str,),
    "<integer>": (int,),
    "<boolean>": (bool,),
    "<data>": (bytes,),
    "<array>": (list,),
    "<dictionary>": (dict,),
    "<real>": (float,),
    "<date>": (datetime.datetime,),
}


class SchemaViolations(AssertionError):
    """A profile broke the schemas; ``errors`` lists each break as "path: what"."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@cache
def schemas() -> dict[str, list[dict]]:
    """Payload type -> its ``payloadkeys``, for every schema file."""
    loaded = {}
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        loaded[document["payload"]["payloadtype"]] = document["payloadkeys"]
    return loaded


def payload_keys(payload_type: str) -> list[dict]:
    """The keys a payload of ``payload_type`` may hold: the common ones and its own."""
    own = schemas()[payload_type]
    names = {key["key"] for key in own}
    return [k for k in schemas()["CommonPayloadKeys"] if k["key"] not in names] + own


def validate_mobileconfig(data: bytes) -> list[str]:
    """Every schema violation of a (plain, unsigned) .mobileconfig; empty when valid."""
    try:
        document = plistlib.loads(data)
    except plistlib.InvalidFileException as exc:
        return [f"not a property list: {exc}"]
    return validate_profile(document)


def validate_profile(document: Any) -> list[str]:
    """Every schema violation of a parsed profile (the top-level dictionary)."""
    if not isinstance(document, dict):
        return [f"/: a profile is a dictionary, not {type(document).__name__}"]
    # Payloads are checked against their own schemas below, not TopLevel's <any> item.
    top_keys = [
        {**key, "subkeys": []} if key["key"] == "PayloadContent" else key
        for key in schemas()["TopLevel"]
    ]
    errors = check_dictionary(document, top_keys, path="")
    content = document.get("PayloadContent")
    for index, payload in enumerate(content if isinstance(content, list) else []):
        errors += validate_payload(payload, path=f"/PayloadContent[{index}]")
    return errors


def validate_payload(payload: Any, *, path: str) -> list[str]:
    if not isinstance(payload, dict):
        return [f"{path}: a payload is a dictionary, not {type(payload).__name__}"]
    payload_type = payload.get("PayloadType")
    if payload_type not in schemas() or payload_type in {"TopLevel", "CommonPayloadKeys"}:
        return [f"{path}: no schema for PayloadType {payload_type!r}"]
    return check_dictionary(payload, payload_keys(payload_type), path=f"{path}<{payload_type}>")


def check_dictionary(value: dict, keys: list[dict], *, path: str) -> list[str]:
    defined = {key["key"]: key for key in keys}
    wildcard = defined.get(ANY_KEY)
    errors = [
        f"{path}/{name}: required key is missing"
        for name, key in defined.items()
        if name != ANY_KEY and key.get("presence") == "required" and name not in value
    ]
    for name, item in value.items():
        key = defined.get(name, wildcard)
        if key is None:
            errors.append(f"{path}/{name}: key is not defined by the schema")
            continue
        errors += check_value(item, key, path=f"{path}/{name}")
    return errors


def check_value(value: Any, key: dict, *, path: str) -> list[str]:
    expected = key["type"]
    if expected == "<any>":
        return []
    if not _has_type(value, expected):
        return [f"{path}: expected {expected}, got {type(value).__name__} {value!r:.60}"]
    errors = []
    if "rangelist" in key and value not in key["rangelist"]:
        errors.append(f"{path}: {value!r} is not one of {key['rangelist']}")
    if "format" in key and not re.search(key["format"], value):
        errors.append(f"{path}: {value!r} does not match {key['format']}")
    subkeys = key.get("subkeys") or []
    if expected == "<dictionary>" and subkeys:
        errors += check_dictionary(value, subkeys, path=path)
    if expected == "<array>" and subkeys:
        errors += _check_array(value, subkeys[0], path=path)
    return errors


def _check_array(items: list, item_key: dict, *, path: str) -> list[str]:
    errors = []
    repetition = item_key.get("repetition") or {}
    if "min" in repetition and len(items) < repetition["min"]:
        errors.append(f"{path}: needs at least {repetition['min']} items, has {len(items)}")
    if "max" in repetition and len(items) > repetition["max"]:
        errors.append(f"{path}: allows at most {repetition['max']} items, has {len(items)}")
    for index, item in enumerate(items):
        errors += check_value(item, item_key, path=f"{path}[{index}]")
    return errors


def _has_type(value: Any, expected: str) -> bool:
    if expected not in PYTHON_TYPES:
        raise ValueError(f"unknown schema type {expected}")
    if isinstance(value, bool) and expected != "<boolean>":
        return False  # plist <true/> is no <integer>, though Python's bool is an int
    return isinstance(value, PYTHON_TYPES[expected])


def assert_valid_mobileconfig(data: bytes) -> dict:
    """The parsed profile; raises ``SchemaViolations`` listing every break."""
    errors = validate_mobileconfig(data)
    if errors:
        raise SchemaViolations(errors)
    return plistlib.loads(data)
