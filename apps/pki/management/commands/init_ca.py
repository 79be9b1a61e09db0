import getpass
import os
import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError
from django.utils.text import slugify

from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm, SignatureHash
from apps.pki.models import CertificateAuthority
from apps.pki.services import MAX_IMPORT_BYTES, generate_local_ca, import_ca

GENERATE_ONLY = ("subject", "key_algorithm", "validity_years", "parent", "path_length")


class Command(BaseCommand):
    help = (
        "Create a local CA server: generate a root (or an intermediate with --parent), or "
        "import one from PKCS#12 or PEM with --import. The import password is read from "
        "the variable named by --password-env, or asked for when run in a terminal; it is "
        "never a command-line argument."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Display name (unique).")
        parser.add_argument("--slug", help="Used in public URLs; default: from the name.")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--hash",
            default=SignatureHash.SHA256,
            choices=SignatureHash.values,
            help="Signature hash when this CA signs (default sha256).",
        )
        gen = parser.add_argument_group("generate")
        gen.add_argument("--subject", help='Subject DN, e.g. "C=US,O=Zylker,CN=Zylker Root CA".')
        gen.add_argument(
            "--key-algorithm",
            choices=KeyAlgorithm.values,
            help="Key type and size (default ec-p256).",
        )
        gen.add_argument(
            "--validity-years",
            type=int,
            help="Validity in years (default 10; never beyond the parent's).",
        )
        gen.add_argument("--parent", metavar="SLUG", help="Sign with this local CA.")
        gen.add_argument(
            "--path-length", type=int, help="basicConstraints pathLen (default: unlimited)."
        )
        imp = parser.add_argument_group("import")
        imp.add_argument(
            "--import",
            dest="import_file",
            metavar="FILE",
            help="PKCS#12 (.p12/.pfx) or PEM with the CA certificate (and key).",
        )
        imp.add_argument("--key", metavar="FILE", help="PEM private key, if not in --import.")
        imp.add_argument(
            "--password-env",
            metavar="VAR",
            help="Name of the environment variable holding the password.",
        )

    def handle(self, *args, **options) -> None:
        ca = self._new_ca(options)
        try:
            if options["import_file"]:
                ca = self._import(ca, options)
            else:
                ca = self._generate(ca, options)
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc
        except crypto.NameSyntaxError as exc:
            raise CommandError(f"Subject: {exc}.") from exc
        except IntegrityError as exc:
            raise CommandError("A CA server with this name or slug already exists.") from exc
        self.stdout.write(
            f"slug: {ca.slug}\nsubject: {ca.subject}\n"
            f"fingerprint (SHA-256): {crypto.colon_hex(ca.fingerprint_sha256)}"
        )

    def _new_ca(self, options: dict) -> CertificateAuthority:
        slug = options["slug"] or slugify(options["name"])[:64]
        ca = CertificateAuthority(
            name=options["name"],
            slug=slug,
            description=options["description"],
            signature_hash=options["hash"],
        )
        try:
            ca.clean_fields(exclude=_fields_except("name", "slug", "description"))
            ca.validate_unique()
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc
        return ca

    def _generate(self, ca: CertificateAuthority, options: dict) -> CertificateAuthority:
        if options["key"] or options["password_env"]:
            raise CommandError("--key and --password-env go with --import.")
        if not options["subject"]:
            raise CommandError("Give --subject to generate a CA, or --import FILE.")
        years = 10 if options["validity_years"] is None else options["validity_years"]
        if not 1 <= years <= 50:
            raise CommandError("--validity-years must be between 1 and 50.")
        if options["path_length"] is not None and options["path_length"] < 0:
            raise CommandError("--path-length must be 0 or more.")
        parent = None
        if options["parent"]:
            parent = CertificateAuthority.objects.filter(slug=options["parent"]).first()
            if parent is None:
                raise CommandError(f"No CA server with slug {options['parent']!r}.")
        return generate_local_ca(
            ca=ca,
            subject=options["subject"],
            key_algorithm=options["key_algorithm"] or KeyAlgorithm.EC_P256,
            signature_hash=options["hash"],
            validity_years=years,
            parent=parent,
            path_length=options["path_length"],
        )

    def _import(self, ca: CertificateAuthority, options: dict) -> CertificateAuthority:
        given = [
            f"--{name.replace('_', '-')}" for name in GENERATE_ONLY if options[name] is not None
        ]
        if given:
            raise CommandError(f"{', '.join(given)} cannot be used with --import.")
        data = _read(options["import_file"])
        key_data = _read(options["key"]) if options["key"] else b""
        if options["password_env"]:
            return import_ca(
                ca=ca,
                data=data,
                key_data=key_data,
                password=_password_from_env(options["password_env"]),
            )
        try:
            return import_ca(ca=ca, data=data, key_data=key_data)
        except ValidationError:
            if not sys.stdin.isatty():
                raise
        # Interactive: the file may be encrypted; ask once.
        return import_ca(
            ca=ca,
            data=data,
            key_data=key_data,
            password=getpass.getpass("Password of the CA file: "),
        )


def _fields_except(*names: str) -> list[str]:
    return [f.name for f in CertificateAuthority._meta.fields if f.name not in names]


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            f"{field}: {' '.join(msgs)}" if field != "__all__" else " ".join(msgs)
            for field, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def _read(name: str) -> bytes:
    path = Path(name)
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise CommandError(f"{name} is too large for a CA identity.")
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {name}: {exc.strerror}.") from exc


def _password_from_env(variable: str) -> str:
    if variable not in os.environ:
        raise CommandError(f"The environment variable {variable} (--password-env) is not set.")
    return os.environ[variable]
