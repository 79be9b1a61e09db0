import pytest
from cryptography import x509
from django.core.exceptions import ValidationError

from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import render_subject
from apps.enrollment.variables import (
    CANONICAL,
    LookupValues,
    VariableValueMissing,
    render,
    validate_variables,
)
from tests.factories import force_ca, force_template

VALUES = LookupValues(
    given={
        "USERID": "alice",
        "EMAIL": "alice@zylker.com",
        "FIRST_NAME": "Alice",
        "LAST_NAME": "Liddell",
        "DEVICE_UDID": "00008030-001A2D3E",
        "DEVICE_UUID": "6b8f1c2e-3a4d-4e5f-9a0b-1c2d3e4f5a6b",
        "DEVICE_NAME": "Alice's iPhone",
        "REALM": "ZYLKER",
        "DEVICE_SN": "C02XYZ",
    }
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("CN=$USERID$,E=$EMAIL$", "CN=alice,E=alice@zylker.com"),
        (
            "CN=%username%,E=%email%,GN=%firstname%,SN=%lastname%",
            "CN=alice,E=alice@zylker.com,GN=Alice,SN=Liddell",
        ),
        ("CN=%domainname%\\%username% on %devicename%", "CN=ZYLKER\\alice on Alice's iPhone"),
        ("CN={EnrollmentUser},OU={DeviceUid}", "CN=alice,OU=00008030-001A2D3E"),
        ("{EmailUserName} at {EmailDomain}", "alice at zylker.com"),
        ("$device_uuid_no_dashes$", "6b8f1c2e3a4d4e5f9a0b1c2d3e4f5a6b"),
        ("no variables, 100% literal", "no variables, 100% literal"),
    ],
)
def test_all_three_syntaxes_render_to_the_same_values(text, expected):
    assert render(text, VALUES) == expected


def test_every_canonical_variable_is_known():
    validate_variables(" ".join(f"${name}$" for name in CANONICAL))


@pytest.mark.parametrize(
    "text, unknown",
    [
        ("CN=$EMAIL_ADDRESS$", "$EMAIL_ADDRESS$"),
        ("CN=%userName%-%nickname%", "%nickname%"),
        ("CN={EnrollmentUser}{Favourite}", "{Favourite}"),
    ],
)
def test_an_unknown_variable_is_rejected_by_name(text, unknown):
    with pytest.raises(ValidationError) as error:
        validate_variables(text)
    assert error.value.messages[0].startswith(f"Unknown variable: {unknown}.")


@pytest.mark.parametrize(
    "text, missing",
    [
        ("CN=$USER_SID$", "USER_SID"),
        ("%upn%", "USER_UPN"),
        ("{UserDistinguishedName}", "USER_DN"),
    ],
)
def test_a_variable_without_value_fails_naming_it(text, missing):
    with pytest.raises(VariableValueMissing) as error:
        render(text, VALUES, where="subject CN")
    assert error.value.variable == missing
    assert str(error.value) == (
        f"${missing}$ ({CANONICAL[missing]}) has no value for this device or user (in subject CN)"
    )


def test_an_empty_value_counts_as_missing_never_an_empty_field():
    with pytest.raises(VariableValueMissing):
        render("CN=$EMAIL$", LookupValues(given={"EMAIL": "  "}))


def test_generated_values_are_made_once_per_issuance():
    values = LookupValues(given={})
    first = render("$RANDOM_16$-$TIMESTAMP_MS$", values)
    assert first == render("$RANDOM_16$-$TIMESTAMP_MS$", values)
    assert len(first.split("-")[0]) == 16
    assert len(render("$RANDOM_64$", values)) == 64
    assert render("$RANDOM_16$", LookupValues(given={})) != first.split("-")[0]


@pytest.mark.django_db
def test_a_value_with_a_comma_stays_inside_its_attribute():
    template = force_template(subject="O=Zylker,CN=$DISPLAY_NAME$")
    name = render_subject(template, LookupValues(given={"DISPLAY_NAME": "Doe, John"}))
    assert name == x509.Name(
        [
            x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "Zylker"),
            x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Doe, John"),
        ]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "subject, message",
    [
        ("CN=$NOPE$", "Unknown variable: $NOPE$"),
        ("XX=foo", "unknown attribute 'XX'"),
        ("just text", "is not of the form NAME=value"),
        ("", "This field cannot be blank"),
    ],
)
def test_saving_a_template_with_a_bad_subject_is_a_form_error(subject, message):
    template = CertificateTemplate(name="t", slug="t", ca=force_ca(), subject=subject)
    with pytest.raises(ValidationError) as error:
        template.full_clean()
    assert message in " ".join(error.value.message_dict["subject"])
