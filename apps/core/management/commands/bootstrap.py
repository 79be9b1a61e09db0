import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.core.demo import DemoSetup, ensure_demo
from apps.core.secrets import SecretError


class Command(BaseCommand):
    help = (
        "Create the demo set-up (admin user, staff API token, local root CA, request "
        "templates, an end user, a device group with a Wi-Fi profile and an enrollment code) "
        "if it is missing and print how to use it. Running it again creates nothing new and "
        "prints the same values (--verbosity 0: nothing; --json: one JSON object). Without "
        "--demo it changes nothing: a production install uses createsuperuser and init_ca."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--demo",
            action="store_true",
            help="Create the demo objects (development machines only).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object on stdout, for scripts."
        )

    def handle(self, *args, **options) -> None:
        if not options["demo"]:
            raise CommandError(
                "Nothing to do: pass --demo to create the demo set-up. For production, "
                "use createsuperuser and init_ca.",
                returncode=2,
            )
        try:
            setup = ensure_demo()
        except (SecretError, ValidationError) as exc:
            raise CommandError(f"bootstrap stopped: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(setup.as_dict(), indent=2))
        elif options["verbosity"] > 0:
            self.stdout.write(self._summary(setup))

    def _summary(self, setup: DemoSetup) -> str:
        data = setup.as_dict()
        created = ", ".join(setup.created) or "nothing (already set up)"
        password = data["admin_password"] or "(changed since bootstrap; not shown)"
        token = data["api_token"] or "(revoked or not usable; create one in the console)"
        challenge = data["static_challenge"] or "(not a static challenge any more)"
        portal_password = data["portal_password"] or "(changed since bootstrap; not shown)"
        code = data["enrollment_code"] or "(revoked or not usable; create one in the console)"
        lines = [
            self.style.SUCCESS(f"mdmcerts demo ready; created: {created}."),
            f"  Console         {data['admin_url']}",
            f"  Username        {data['admin_username']}",
            f"  Password        {password}",
            f"  API token       {token}  (header: Authorization: Token <key>)",
            f"  CA              {data['ca_name']} ({data['ca_slug']})",
            f"  Template        {data['template_name']} ({data['template_slug']})",
            f"  SCEP URL        {data['scep_url']}",
            f"  Challenge       {challenge}",
            f"  End user        {data['portal_username']}  password {portal_password}",
            f"  Wi-Fi template  {data['wifi_template_name']} ({data['wifi_template_slug']}, "
            "dynamic challenges)",
            f"  Group, profile  {data['group_name']}: {data['profile_name']}",
            f"  Enrollment code {code}  (devices join {data['group_name']})",
        ]
        if data["enrollment_code"]:
            lines.append(
                f"  Agent           python manage.py agent --server {settings.PUBLIC_BASE_URL} "
                f"--state-dir var/agent enroll --code={code} --serial DEMO-0001"
            )
        return "\n".join(lines)
