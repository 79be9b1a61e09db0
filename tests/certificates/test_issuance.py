"""issue_certificate on a local CA: the template decides the certificate, openssl agrees."""

import datetime
import re

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.certificates.services import IssuanceRefused, issue_certificate
from apps.enrollment.rendering import UPN_OID
from apps.enrollment.variables import values_for_user
from apps.pki import crypto
from tests.factories import force_ca, force_template, force_user, make_csr, make_key
from tests.openssl import openssl, verify

pytestmark = pytest.mark.django_db

CUSTOM_EKU = "1.3.6.1.4.1.311.20.2.2"  # smart card logon


@pytest.fixture
def chain():
    root = force_ca(path_length=1, subject="C=US,O=Zylker,CN=Zylker Root")
    return root, force_ca(parent=root, path_length=0, subject="C=US,O=Zylker,CN=Zylker Issuing")


@pytest.fixture
def template(chain):
    return force_template(
        ca=chain[1],
        subject="C=US,O=Zylker,OU=Devices,CN=%firstname%",
        sans=[
            ("rfc822", "$EMAIL$"),
            ("upn", "{EnrollmentUser}@corp.zylker.com"),
            ("dns", "$USERID$.devices.zylker.com"),
            ("uri", "urn:zylker:user:$USERID$"),
        ],
        extended_key_usages=[ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string, CUSTOM_EKU],
        key_usage_digital_signature=True,
        key_usage_key_encipherment=False,
        validity_days=90,
    )


@pytest.fixture
def dora():
    return force_user("dora", email="dora@zylker.com", first_name="Dora", last_name="Explorer")


def issue(template, user, csr=None):
    return issue_certificate(csr or make_csr(), template, values_for_user(user), user=user)


def test_the_certificate_verifies_against_its_ca_with_openssl(chain, template, dora, tmp_path):
    root, intermediate = chain
    cert = issue(template, dora)
    result = verify(
        cert.certificate_pem,
        root_pem=root.certificate_pem,
        untrusted_pem=intermediate.certificate_pem,
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip().endswith("leaf.pem: OK")


def test_its_extensions_are_exactly_what_the_template_says(chain, template, dora):
    intermediate = chain[1]
    cert = issue(template, dora).certificate
    assert {e.oid for e in cert.extensions} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert (
        usage.value.digital_signature,
        usage.value.key_encipherment,
        usage.value.key_cert_sign,
        usage.value.crl_sign,
    ) == (True, False, False, False)
    ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [oid.dotted_string for oid in ekus] == [
        ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,
        CUSTOM_EKU,
    ]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["dora@zylker.com"]
    assert sans.get_values_for_type(x509.DNSName) == ["dora.devices.zylker.com"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:zylker:user:dora"]
    (upn,) = sans.get_values_for_type(x509.OtherName)
    assert upn.type_id == UPN_OID and upn.value == b"\x0c\x14dora@corp.zylker.com"
    crl = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl[0].full_name[0].value == f"http://127.0.0.1:8000/pki/{intermediate.slug}/crl"
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [
        f"http://127.0.0.1:8000/pki/{intermediate.slug}/ocsp",
        f"http://127.0.0.1:8000/pki/{intermediate.slug}/ca.crt",
    ]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier
        == intermediate.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    )
    assert cert.subject.rfc4514_string() == "CN=Dora,OU=Devices,O=Zylker,C=US"


def test_openssl_reads_the_same_extensions(template, dora):
    text = openssl(
        "x509", "-noout", "-text", input=issue(template, dora).certificate_pem.encode()
    ).stdout.decode()
    assert re.search(r"Basic Constraints: critical\s+CA:FALSE", text)
    assert re.search(r"Key Usage: critical\s+Digital Signature\n", text)
    assert re.search(
        r"Extended Key Usage: \s*TLS Web Client Authentication, "
        r"(Microsoft Smartcard Login|1\.3\.6\.1\.4\.1\.311\.20\.2\.2)",
        text,
    )
    assert (
        "email:dora@zylker.com, othername: UPN::dora@corp.zylker.com, "
        "DNS:dora.devices.zylker.com, URI:urn:zylker:user:dora"
    ) in text
    assert "Subject: C = US, O = Zylker, OU = Devices, CN = Dora" in text


def test_the_inventory_row_describes_the_certificate(template, dora):
    row = issue(template, dora)
    cert = row.certificate
    assert row.serial == format(cert.serial_number, "x")
    assert cert.serial_number.bit_length() >= 64
    assert row.subject == "C=US,O=Zylker,OU=Devices,CN=Dora"
    assert row.subject_alt_names.splitlines() == [
        "email:dora@zylker.com",
        "UPN:dora@corp.zylker.com",
        "DNS:dora.devices.zylker.com",
        "URI:urn:zylker:user:dora",
    ]
    assert (row.status, row.source, row.user, row.template, row.ca) == (
        "active",
        "scep",
        dora,
        template,
        template.ca,
    )
    assert row.not_after == cert.not_valid_after_utc
    event = AuditEvent.objects.get(action="issue", object_id=str(row.pk))
    assert event.object_repr == str(row)


def test_validity_comes_from_the_template(template, dora):
    with time_machine.travel(datetime.datetime(2027, 3, 1, 12, tzinfo=datetime.UTC), tick=False):
        row = issue(template, dora)
    assert row.not_after == datetime.datetime(2027, 5, 30, 12, tzinfo=datetime.UTC)


def test_validity_never_goes_beyond_the_ca(dora):
    short_ca = force_ca(validity_years=1)
    template = force_template(ca=short_ca, validity_days=3650)
    row = issue(template, dora)
    assert row.not_after == short_ca.not_after


FORBIDDEN_ASKS = {
    "CA rights": (x509.BasicConstraints(ca=True, path_length=None), "asks for a CA certificate"),
    "keyCertSign": (
        crypto.key_usage(digital_signature=True, key_cert_sign=True),
        "key usage key_cert_sign",
    ),
    "key encipherment the template leaves out": (
        crypto.key_usage(key_encipherment=True),
        "key usage key_encipherment",
    ),
    "anyExtendedKeyUsage": (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
        "extended key usage 2.5.29.37.0",
    ),
    "serverAuth": (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        "extended key usage 1.3.6.1.5.5.7.3.1",
    ),
    "a foreign DNS name": (
        x509.SubjectAlternativeName([x509.DNSName("www.bank.example")]),
        "the SAN dns:www.bank.example",
    ),
    "an unknown critical extension": (
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
        "critical extension 1.2.3.4.5",
    ),
}


@pytest.mark.parametrize("ask", FORBIDDEN_ASKS)
def test_a_request_asking_for_more_than_the_template_gives_is_refused(ask, template, dora):
    extension, reason = FORBIDDEN_ASKS[ask]
    csr = make_csr(extensions=[(extension, True)])
    with pytest.raises(IssuanceRefused, match=reason) as refused:
        issue(template, dora, csr)
    assert Certificate.objects.count() == 0
    assert AuditEvent.objects.get(action="issue_failed").message == str(refused.value)


def test_a_request_asking_for_what_the_template_gives_is_served(template, dora):
    """As Apple devices send it: the profile's SANs and key usage in the CSR."""
    csr = make_csr(
        subject=x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ignored")]),
        extensions=[
            (crypto.key_usage(digital_signature=True), True),
            (x509.SubjectAlternativeName([x509.RFC822Name("dora@zylker.com")]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ],
    )
    cert = issue(template, dora, csr).certificate
    assert cert.subject.rfc4514_string() == "CN=Dora,OU=Devices,O=Zylker,C=US"
    assert len(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == 4


def test_subject_from_request_copies_only_the_allowed_san_types(dora):
    template = force_template(subject_source="request", allowed_request_san_types=["dns"])
    csr = make_csr(
        subject=x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "printer-7")]),
        extensions=[
            (
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("printer-7.zylker.com"),
                        x509.RFC822Name("ceo@zylker.com"),
                        x509.UniformResourceIdentifier("https://evil.example"),
                    ]
                ),
                False,
            )
        ],
    )
    cert = issue(template, dora, csr).certificate
    assert cert.subject.rfc4514_string() == "CN=printer-7"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.DNSName("printer-7.zylker.com")]


@pytest.mark.parametrize(
    "key_algorithm, template_minimum",
    [
        ("ec-p256", "ec-p384"),
        ("rsa2048", "ec-p256"),
        ("ec-p256", "rsa2048"),
        ("rsa2048", "rsa3072"),
    ],
)
def test_a_key_below_the_template_minimum_is_refused(key_algorithm, template_minimum, dora):
    template = force_template(key_algorithm=template_minimum)
    with pytest.raises(IssuanceRefused, match="the key must be"):
        issue(template, dora, make_csr(make_key(key_algorithm)))
    assert Certificate.objects.count() == 0


def test_a_stronger_key_of_the_same_type_is_accepted(dora):
    template = force_template(key_algorithm="ec-p256")
    assert issue(template, dora, make_csr(make_key("ec-p384"))).status == "active"


def test_a_missing_variable_value_fails_with_a_clear_reason_and_changes_nothing(template):
    nobody = force_user("eve", email="", first_name="Eve")
    with pytest.raises(IssuanceRefused) as refused:
        issue(template, nobody)
    assert str(refused.value) == (
        "$EMAIL$ (user's email address) has no value for this device or user "
        "(in RFC 822 name (email) SAN)"
    )
    assert Certificate.objects.count() == 0
    event = AuditEvent.objects.get(action="issue_failed")
    assert event.message == str(refused.value)
    assert event.object_id == str(template.pk)


def test_a_request_whose_signature_does_not_verify_is_refused(template, dora):
    good = make_csr()
    forged = bytearray(good.public_bytes(serialization.Encoding.DER))
    forged[-3] ^= 0x01  # inside the signature
    csr = x509.load_der_x509_csr(bytes(forged))
    with pytest.raises(IssuanceRefused, match="proof of possession"):
        issue(template, dora, csr)
    assert Certificate.objects.count() == 0


def test_serials_are_unique_per_ca_in_the_database(template, dora):
    row = issue(template, dora)
    other = issue(template, dora)
    other.serial = row.serial
    with pytest.raises(IntegrityError), transaction.atomic():
        other.save()


def test_a_ca_that_is_not_valid_yet_refuses_to_issue(template, dora):
    past = timezone.now() - datetime.timedelta(days=1)
    with (
        time_machine.travel(past, tick=False),
        pytest.raises(IssuanceRefused, match="not valid now"),
    ):
        issue(template, dora)
