from pathlib import Path

from cryptography import x509
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.certificates.choices import CertificateSource
from apps.certificates.services import IssuanceRefused, issue_certificate
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.variables import values_for_user

MAX_CSR_BYTES = 64 * 1024


class Command(BaseCommand):
    help = (
        "Issue a certificate for a CSR (PEM or DER) as a request template says, record it in "
        "the inventory (source: manual) and write the PEM certificate to --out or stdout. "
        "Lookup variables take their values from --user."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--template", required=True, metavar="SLUG")
        parser.add_argument("--csr", required=True, metavar="FILE", help="PEM or DER CSR.")
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="The certificate's user; fills $USERID$, $EMAIL$, ...",
        )
        parser.add_argument("--out", metavar="FILE", help="Write the PEM here (default stdout).")

    def handle(self, *args, **options) -> None:
        template = (
            CertificateTemplate.objects.select_related("ca")
            .filter(slug=options["template"])
            .first()
        )
        if template is None:
            raise CommandError(f"No request template with slug {options['template']!r}.")
        user = _user(options["user"]) if options["user"] else None
        csr = _load_csr(options["csr"])
        try:
            row = issue_certificate(
                csr, template, values_for_user(user), user=user, source=CertificateSource.MANUAL
            )
        except IssuanceRefused as exc:
            raise CommandError(f"Refused: {exc}.") from exc
        if options["out"]:
            Path(options["out"]).write_text(row.certificate_pem)
            self.stdout.write(
                f"Wrote certificate {row.serial} ({row.subject}) to {options['out']}."
            )
        else:
            self.stdout.write(row.certificate_pem, ending="")


def _user(username: str):
    user = get_user_model()._default_manager.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user {username!r}.")
    return user


def _load_csr(name: str) -> x509.CertificateSigningRequest:
    path = Path(name)
    try:
        if path.stat().st_size > MAX_CSR_BYTES:
            raise CommandError(f"{name} is too large for a CSR.")
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {name}: {exc.strerror}.") from exc
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CommandError(f"{name} is not a readable CSR (PEM or DER).") from exc
