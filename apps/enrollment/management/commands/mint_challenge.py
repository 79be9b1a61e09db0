import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.devices.models import Device
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.services import mint_challenge


class Command(BaseCommand):
    help = (
        "Mint a one-time dynamic SCEP challenge for a template, bound to a device (its owner "
        "fills the user variables) or a user, and print it. Only its salted hash is stored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--template", required=True, help="template slug")
        parser.add_argument("--device", type=int, help="device id")
        parser.add_argument("--user", help="username (when no device is given)")
        parser.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")

    def handle(self, *args, **options) -> None:
        template = CertificateTemplate.objects.filter(slug=options["template"]).first()
        if template is None:
            raise CommandError(f"no template with slug {options['template']!r}")
        if template.challenge_type != ChallengeType.DYNAMIC:
            raise CommandError(f"template {template.slug} does not use dynamic challenges")
        if not 1 <= options["minutes"] <= 7 * 24 * 60:
            raise CommandError("--minutes must be between 1 and 10080")
        device = user = None
        if options["device"] is not None:
            device = Device.objects.filter(pk=options["device"]).first()
            if device is None:
                raise CommandError(f"no device with id {options['device']}")
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
        _, value = mint_challenge(
            template=template,
            device=device,
            user=user,
            ttl=datetime.timedelta(minutes=options["minutes"]),
        )
        self.stdout.write(value)
