from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.certificates import identities, services


def _generate_identities() -> dict[str, int]:
    return {"identities generated": identities.generate_pending_identities()}


def _purge_identities() -> dict[str, int]:
    return {"identities purged": identities.purge_undelivered_identities()}


# In the order ``run`` runs them: identities before their renewal, revocations before the
# CRLs, expiry before the digest.
SWEEPS: dict[str, Callable[[], dict[str, int]]] = {
    "identity-generation": _generate_identities,
    "renewal": services.sweep_renewals,
    "revocation": services.sweep_revocations,
    "identity-purge": _purge_identities,
    "expiry": services.sweep_expired,
    "crl": services.sweep_crls,
    "digest": services.send_expiry_digest,
}


class Command(BaseCommand):
    help = (
        "Run the certificate lifecycle sweeps once, now, in this process (as beat runs them "
        "through Celery): identity generation, renewal, revocation (grace periods), "
        "identity purge, expiry, CRL republication and the expiry digest. Prints what each "
        "did. For operators, scripts and disaster recovery; safe beside running workers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["run"], help="run: run the sweeps once.")
        parser.add_argument(
            "--task",
            metavar="NAME",
            help=f"Run this sweep only: {', '.join(SWEEPS)}.",
        )

    def handle(self, *args, **options) -> None:
        name = options["task"]
        if name is not None and name not in SWEEPS:
            raise CommandError(f"Unknown task {name!r}. Valid tasks: {', '.join(SWEEPS)}.")
        for sweep_name in [name] if name else SWEEPS:
            self.stdout.write(f"{sweep_name}: {describe(SWEEPS[sweep_name]())}")


def describe(result: dict[str, int]) -> str:
    """``{"revoked": 2, "removed": 0}`` as "2 revoked, 0 removed"."""
    return ", ".join(f"{count} {label}" for label, count in result.items())
