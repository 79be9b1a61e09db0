from django.core.management.base import BaseCommand, CommandError

from apps.core.rewrap import rewrap_all
from apps.core.secrets import SecretError, key_ring


class Command(BaseCommand):
    help = (
        "Re-encrypt every private key and stored secret under the first key of "
        "MDMCERTS_KEK. Put the new key first, keep the old one after it, run this, then "
        "drop the old key."
    )

    def handle(self, *args, **options) -> None:
        try:
            report = rewrap_all()
        except SecretError as exc:
            raise CommandError(f"rewrap stopped: {exc}") from exc
        for context, count in sorted(report.rewrapped.items()):
            self.stdout.write(f"{context}: {count} rewrapped")
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.total} secrets rewrapped under key {key_ring().primary_id!r}; "
                f"{report.already_current} already current."
            )
        )
