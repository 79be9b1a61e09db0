"""``manage.py agent``: the reference device agent (the logic is ``apps.devices.agent``)."""

import argparse
import json
import logging
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.devices import agent


class Command(BaseCommand):
    help = (
        "The reference device agent: enroll this host with an enrollment code, check in "
        "(install the profiles the server assigns, enrolling their certificates over SCEP "
        "or opening the PKCS#12 identities the server generated, remove the ones it "
        "withdraws, report inventory), or unenroll. It talks to the "
        "server over HTTP only and never uses the database. Exit status: 0 ok, 1 a profile "
        "failed, 2 a usage or server error."
    )
    # A device runs none of the server's checks and has no database to check.
    requires_system_checks: list = []

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--server",
            help="The mdmcerts base URL, e.g. https://certs.example.com (required to "
            "enroll; later the enrolled one is used unless given).",
        )
        parser.add_argument(
            "--state-dir", required=True, type=Path, help="Where the agent keeps its state."
        )
        self._add_json(parser, default=False)
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        self._add_enroll(actions.add_parser("enroll", help="Enroll this host."))
        checkin = actions.add_parser("checkin", help="Check in and apply what the server says.")
        checkin.add_argument(
            "--scan", action="store_true", help="Report the installed certificates."
        )
        checkin.add_argument(
            "--max-wait",
            type=float,
            default=agent.DEFAULT_MAX_WAIT,
            help="Seconds to wait at most for a pending SCEP request (default %(default)s); "
            "the payload's retries are spread over this time if needed.",
        )
        self._add_json(checkin)
        self._add_json(actions.add_parser("unenroll", help="Leave management, delete profiles."))

    def _add_json(self, parser, default=argparse.SUPPRESS) -> None:
        parser.add_argument(
            "--json", action="store_true", default=default, help="Print one JSON object."
        )

    def _add_enroll(self, parser) -> None:
        defaults = agent.default_facts()
        parser.add_argument("--code", required=True, help="The enrollment code.")
        parser.add_argument("--name", default=defaults["name"], help="Default: the host name.")
        parser.add_argument("--platform", choices=agent.PLATFORMS, default=defaults["platform"])
        for fact in ("serial", "udid", "uuid", "imei", "imsi", "wifi-mac", "client-id"):
            parser.add_argument(f"--{fact}", default="", help=f"The device's {fact}.")
        self._add_json(parser)

    def handle(self, *args, **options) -> None:
        self._log_progress(options["verbosity"])
        try:
            result = self._run(options)
        except agent.AgentError as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        elif options["verbosity"] > 0:
            self.stdout.write(result.summary())
        if result.exit_code:
            sys.exit(result.exit_code)

    def _run(self, options: dict):
        state_dir, server = options["state_dir"], options["server"]
        if options["action"] == "enroll":
            if not server:
                raise agent.AgentError("enroll needs --server")
            return agent.enroll(
                state_dir, server=server, code=options["code"], facts=_facts(options)
            )
        if options["action"] == "checkin":
            return agent.checkin(
                state_dir, server=server, scan=options["scan"], max_wait=options["max_wait"]
            )
        return agent.unenroll(state_dir, server=server)

    def _log_progress(self, verbosity: int) -> None:
        """Progress (SCEP polling, failures) on stderr, without the server's log format."""
        logger = logging.getLogger(agent.__name__)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("agent: %(message)s"))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO if verbosity > 0 else logging.ERROR)


def _facts(options: dict) -> dict[str, str]:
    return {
        "name": options["name"],
        "platform": options["platform"],
        "serial_number": options["serial"],
        "udid": options["udid"],
        "uuid": options["uuid"],
        "imei": options["imei"],
        "imsi": options["imsi"],
        "wifi_mac": options["wifi_mac"],
        "client_id": options["client_id"],
    }
