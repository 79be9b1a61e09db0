"""Lifecycle sweeps at scale: the renewal sweep, the revocation sweep and CRL generation.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mdmcerts \\
        .venv/bin/python bench/lifecycle_bench.py [--sizes 25000,50000,100000]
    .venv/bin/python bench/lifecycle_bench.py     # without DATABASE_URL: SQLite

With DATABASE_URL on PostgreSQL the run uses a database of its own on that server,
``<name>_bench_lifecycle`` (or the URL's name when it already ends so), created afresh and
dropped at the end; otherwise SQLite in a temporary MDMCERTS_VAR_DIR. DEBUG is off.

For each size it seeds that many certificates (bulk inserts, then on PostgreSQL VACUUM
ANALYZE, as autovacuum would leave the tables, and CHECKPOINT) on one local CA (RSA 2048) and six
templates: automatic renewal on and off, revocation on and off, grace periods global and
overridden, device and server keys. Owners, devices (one in twenty certificates, 2 %
unenrolled), four groups with profiles carrying SCEP or PKCS#12 payloads assigned to them,
and one delivery per device and profile. Of the certificates, in random order:
- 10 % inside their renewal window with a live delivery: the renewal sweep's work (one in
  ten has no profile and is found through the template of a delivered payload);
- 10 % past their grace period on templates that revoke (device unenrolled, superseded,
  missing from the inventory, profile unassigned): the revocation sweep's work;
- 1 % past their grace period on templates that do not revoke (marked removed);
- decoys the sweeps must skip: 1 % re-triggered already, 2 % in the window of templates
  without automatic renewal, 1 % whose grace period still runs;
- the rest active and not due.
The rows carry real PEM from a small pool of certificates the CA signed (nothing in the
sweeps parses it) with unique serials and fingerprints.

Then each of these runs in a fresh process, so its memory is its own: ``sweep_renewals``,
``sweep_revocations`` (which publishes the CA's CRL once at its end) and ``publish_crl``
of the CA (the revoked certificates of the sweep). Every run is measured twice on the same
seed (the data is seeded again): once for time (wall and CPU, the PostgreSQL backend's CPU
from /proc, SQL statements counted by an execute wrapper: BEGIN/COMMIT and server-side
cursor fetches are not statements), once under ``tracemalloc`` for the peak of Python
memory (it slows Python down several times, so that run is not timed). RSS is the run's
peak (VmHWM, reset at its start) and its growth over the RSS at the start. After each run
the work is checked in the database, and the CRL is loaded with ``cryptography``:
signature, entry count and the exact set of serials.

Prints a table per size and sweep, where the time went, and PASS/FAIL for the targets of
issue 5 at 100,000 certificates: each sweep under 10 s, the CRL under 2 s; and, between the
smallest and the largest size of at least 20,000, peak Python memory flat (at most 1.5
times, while the work quadruples with the default sizes) for the renewal sweep and for the
revocation sweep up to its CRL publication.
A CRL holds every entry, so its memory grows with them: printed per entry, not judged.
Exits 1 if a target fails or the work done is not the work seeded, 2 if setting up fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.core.devsecrets import new_kek, new_secret_key  # noqa: E402
from bench.common import SetupFailed, fresh_postgres_database  # noqa: E402

SWEEPS = ("renewal", "revocation", "crl")
TARGET_SIZE = 100_000
TARGET_SECONDS = {"renewal": 10.0, "revocation": 10.0, "crl": 2.0}
FLAT_MEMORY_RATIO = 1.5
# Below this a sweep's work (a tenth of the certificates) fills one or two of its batches of
# 1000, so its memory grows with the work: flatness is judged from here on.
FLAT_MEMORY_FROM = 20_000
SEED = 5  # issue 5: the same data on every run
BATCH = 5_000
CHILD_TIMEOUT = 900
CA_SLUG = "bench-ca"
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
MIB = 1024 * 1024


# --- the seeded data ------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSpec:
    """One seeded template's lifecycle policy."""

    slug: str
    validity_days: int
    renew_before_days: int
    auto_renew: bool
    revocation_enabled: bool
    grace_hours: int | None  # None: the global grace period (24 h)
    server_keys: bool = False

    @property
    def window(self) -> datetime.timedelta:
        """The renewal window: N days, or half the validity when that is shorter."""
        return min(self.renew_before_days, self.validity_days / 2) * DAY

    @property
    def validity(self) -> datetime.timedelta:
        return self.validity_days * DAY


TEMPLATES = (
    TemplateSpec("wifi", 365, 30, auto_renew=True, revocation_enabled=True, grace_hours=None),
    TemplateSpec("vpn", 90, 14, auto_renew=True, revocation_enabled=True, grace_hours=4),
    TemplateSpec("email", 365, 30, auto_renew=False, revocation_enabled=True, grace_hours=72),
    TemplateSpec("kiosk", 30, 30, auto_renew=True, revocation_enabled=False, grace_hours=None),
    TemplateSpec("legacy", 730, 60, auto_renew=False, revocation_enabled=False, grace_hours=0),
    TemplateSpec(
        "identity",
        365,
        30,
        auto_renew=True,
        revocation_enabled=True,
        grace_hours=None,
        server_keys=True,
    ),
)
SPECS = {spec.slug: spec for spec in TEMPLATES}
# Each group's profiles (one per template, named after it); a device is in one group.
GROUP_PROFILES = (
    ("wifi", "vpn", "email", "kiosk", "identity"),
    ("wifi", "vpn", "email", "kiosk", "identity"),
    ("wifi", "vpn", "email", "legacy"),
    ("wifi", "vpn", "email", "legacy"),
)
RETIRED = "retired"  # a Wi-Fi profile unassigned from every group; its deliveries removed

RENEWAL_DUE = "renewal due"
TRIGGERED = "renewal re-triggered already"
NO_AUTO_RENEWAL = "in window, no auto-renewal"
REVOKE_DUE = "grace over, revoke"
REMOVE_DUE = "grace over, remove"
GRACE_RUNNING = "grace running"
ACTIVE = "active, not due"
# Per mille of the certificates, and the templates each state may use (the rest: ACTIVE).
STATES = {
    RENEWAL_DUE: (100, ("wifi", "vpn", "kiosk")),
    TRIGGERED: (10, ("wifi", "vpn", "kiosk")),
    NO_AUTO_RENEWAL: (20, ("email", "legacy")),
    REVOKE_DUE: (100, ("wifi", "vpn", "email")),
    REMOVE_DUE: (10, ("kiosk", "legacy")),
    GRACE_RUNNING: (10, ("wifi", "vpn", "email")),
}
# Causes of the REVOKE_DUE certificates, per twenty.
REVOKE_CAUSES = ("unenrolled",) * 4 + ("superseded",) * 8 + ("missing",) * 5 + ("unassigned",) * 3


@dataclass
class World:
    """What one seed made, and what the sweeps must do with it."""

    size: int
    states: Counter = field(default_factory=Counter)
    carriers: set = field(default_factory=set)  # (device, profile) deliveries to re-trigger
    seconds: float = 0.0
    database_mib: float | None = None  # PostgreSQL

    @property
    def renewals(self) -> int:
        return self.states[RENEWAL_DUE]

    @property
    def revocations(self) -> int:
        return self.states[REVOKE_DUE]

    @property
    def removals(self) -> int:
        return self.states[REMOVE_DUE]


@dataclass(frozen=True)
class Fixtures:
    """The seeded objects certificates point to."""

    ca_id: int
    templates: dict  # slug -> pk
    profiles: dict  # slug (or RETIRED) -> pk
    enrolled: list  # (device pk, owner pk, group index)
    unenrolled: list
    pem_pool: list


# --- main -----------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    if args.measure:
        return measure_child(args.measure, trace=args.trace)
    try:
        with contextlib.ExitStack() as stack:
            return run(args, stack)
    except SetupFailed as exc:
        print(f"lifecycle_bench: setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lifecycle_bench: interrupted", file=sys.stderr)
        return 130


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000", help="certificates seeded")
    parser.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL bench db")
    parser.add_argument("--measure", choices=SWEEPS, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size_list = sorted({int(size) for size in args.sizes.split(",")})
    if args.size_list[0] < 1000:
        parser.error("--sizes: at least 1000 certificates each")
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    vendor = configure(tmp, stack, keep_db=args.keep_db)
    setup_django(migrate=True)
    stack.callback(close_connections)
    print(f"{vendor}; {os.cpu_count()} cores; sizes {', '.join(map(str, args.size_list))}")
    results, checks = [], []
    for size in args.size_list:
        busy = background_busy()
        print(f"\n{size} certificates (other processes use {busy:.0%} of the machine)")
        timed, world = measure_size(size, trace=False, checks=checks)
        traced, _ = measure_size(size, trace=True, checks=checks)
        for sweep in SWEEPS:
            results.append(Row(size, sweep, world, timed[sweep], traced[sweep]))
    print_results(results, vendor)
    return 0 if judge(results, checks) else 1


def measure_size(size: int, *, trace: bool, checks: list) -> tuple[dict, World]:
    """Seed ``size`` certificates afresh and run each sweep on them in a process of its
    own; the measurements by sweep, checked against the seed (appended to ``checks``)."""
    from django.db import DatabaseError

    try:
        wipe()
        world = seed(size)
    except DatabaseError as exc:
        raise SetupFailed(f"seeding {size} certificates failed: {exc}") from exc
    what = "memory (tracemalloc)" if trace else "time"
    on_disk = f", database {world.database_mib:.0f} MiB" if world.database_mib else ""
    print(f"  seeded in {world.seconds:.1f} s{on_disk}; measuring {what}")
    measured = {}
    for sweep in SWEEPS:
        measured[sweep] = run_child(sweep, trace=trace)
        print(f"  {sweep}: {measured[sweep]['seconds']:.2f} s, {describe(measured[sweep])}")
        for label, ok in verify(sweep, world, measured[sweep]):
            checks.append((size, sweep, label, ok))
            if not ok or not trace:
                print(f"    {'ok' if ok else 'MISMATCH'}: {label}")
    return measured, world


# --- database and Django --------------------------------------------------------------


def configure(tmp: Path, stack: contextlib.ExitStack, *, keep_db: bool) -> str:
    """The environment of this process and of the measured ones; the database vendor."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured.startswith(("postgres://", "postgresql://", "pgsql://")):
        url, vendor = (
            fresh_postgres_database(configured, stack, suffix="_bench_lifecycle", keep=keep_db),
            "PostgreSQL",
        )
    else:
        url, vendor = f"sqlite:///{tmp / 'db.sqlite3'}", "SQLite"
    os.environ.update(
        DATABASE_URL=url,
        MDMCERTS_VAR_DIR=str(tmp / "var"),
        DEBUG="false",  # with DEBUG on, Django keeps every query: memory would grow
        SECRET_KEY=new_secret_key(),
        MDMCERTS_KEK=new_kek(),
        CELERY_BROKER_URL="memory://",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="mdmcerts.settings",
    )
    return vendor


def setup_django(*, migrate: bool = False) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        try:
            call_command("migrate", verbosity=0)
        except Exception as exc:
            raise SetupFailed(f"migrate failed: {exc}") from exc


def close_connections() -> None:
    from django.db import connections

    connections.close_all()


def wipe() -> None:
    """Empty every table but content types and permissions (what the sweeps wrote included)."""
    from django.core.management.color import no_style
    from django.db import connection

    keep = {"django_content_type", "auth_permission", "django_migrations"}
    tables = [
        table
        for table in connection.introspection.django_table_names(only_existing=True)
        if table not in keep
    ]
    statements = connection.ops.sql_flush(
        no_style(), tables, reset_sequences=True, allow_cascade=True
    )
    connection.ops.execute_sql_flush(statements)


# --- seeding --------------------------------------------------------------------------


def seed(size: int) -> World:
    """``size`` certificates and what they need (see the module docstring)."""
    from django.db import connection
    from django.utils import timezone

    from apps.certificates.models import LifecycleSettings

    started = time.perf_counter()
    rng = random.Random(SEED * 1_000_003 + size)
    now = timezone.now()
    LifecycleSettings.load()
    fixtures = seed_fixtures(size, rng, now)
    world = World(size)
    seed_certificates(world, fixtures, rng, now)
    if connection.vendor == "postgresql":
        settle_postgres(world)
    world.seconds = time.perf_counter() - started
    return world


def settle_postgres(world: World) -> None:
    """VACUUM ANALYZE, as autovacuum leaves a table, then CHECKPOINT, so that the runs do
    not write out the seeding's dirty pages; the database's size, for the report."""
    from django.db import DatabaseError, connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        with contextlib.suppress(DatabaseError):  # needs superuser or pg_checkpoint
            cursor.execute("CHECKPOINT")
        cursor.execute("SELECT pg_database_size(current_database())")
        world.database_mib = cursor.fetchone()[0] / MIB


def seed_fixtures(size: int, rng: random.Random, now: datetime.datetime) -> Fixtures:
    ca = seed_ca()
    templates = seed_templates(ca)
    profiles = seed_profiles(templates, ca)
    enrolled, unenrolled = seed_devices(size, profiles, now)
    return Fixtures(
        ca_id=ca.pk,
        templates={slug: template.pk for slug, template in templates.items()},
        profiles=profiles,
        enrolled=enrolled,
        unenrolled=unenrolled,
        pem_pool=pem_pool(ca, rng),
    )


def seed_ca():
    from apps.pki.choices import KeyAlgorithm, SignatureHash
    from apps.pki.models import CertificateAuthority
    from apps.pki.services import generate_local_ca

    return generate_local_ca(
        ca=CertificateAuthority(name="Bench CA", slug=CA_SLUG),
        subject="O=Zylker,CN=Zylker Devices CA",
        key_algorithm=KeyAlgorithm.RSA_2048,
        signature_hash=SignatureHash.SHA256,
        validity_years=10,
    )


def seed_templates(ca) -> dict:
    from apps.enrollment.choices import KeyGeneration
    from apps.enrollment.models import CertificateTemplate

    templates = {}
    for spec in TEMPLATES:
        templates[spec.slug] = CertificateTemplate.objects.create(
            name=f"Zylker {spec.slug}",
            slug=spec.slug,
            ca=ca,
            subject="O=Zylker,OU=$USERID$,CN=$DEVICE_SN$",
            extended_key_usages=["1.3.6.1.5.5.7.3.2"],
            validity_days=spec.validity_days,
            auto_renew=spec.auto_renew,
            renew_before_days=spec.renew_before_days,
            revocation_enabled=spec.revocation_enabled,
            revocation_grace_hours=spec.grace_hours,
            key_generation=KeyGeneration.SERVER if spec.server_keys else KeyGeneration.DEVICE,
        )
    return templates


def seed_profiles(templates: dict, ca) -> dict:
    """A profile per template (SCEP payload, or PKCS#12 for server keys, and the CA's
    chain) plus the retired Wi-Fi profile; the groups with their assignments."""
    from apps.devices.models import DeviceGroup
    from apps.profiles.choices import PayloadKind, ProfilePlatform
    from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload

    profiles = {}
    for slug, template in [*templates.items(), (RETIRED, templates["wifi"])]:
        profile = Profile.objects.create(
            name=f"Zylker {slug}", identifier=f"com.zylker.{slug}", platform=ProfilePlatform.ANY
        )
        server_keys = SPECS.get(slug, SPECS["wifi"]).server_keys
        kind = PayloadKind.PKCS12 if server_keys else PayloadKind.SCEP
        ProfilePayload.objects.create(
            profile=profile, position=0, kind=kind, display_name="identity", template=template
        )
        ProfilePayload.objects.create(
            profile=profile,
            position=1,
            kind=PayloadKind.TRUSTED_CERTIFICATE,
            display_name="Zylker CA chain",
            ca=ca,
        )
        profiles[slug] = profile.pk
    for index, slugs in enumerate(GROUP_PROFILES):
        group = DeviceGroup.objects.create(name=f"Zylker group {index}")
        ProfileAssignment.objects.bulk_create(
            ProfileAssignment(profile_id=profiles[slug], group=group) for slug in slugs
        )
    return profiles


def seed_devices(size: int, profiles: dict, now: datetime.datetime) -> tuple[list, list]:
    """Owners (two devices each), devices (one per twenty certificates, one in fifty
    unenrolled), their groups and deliveries. Returns (enrolled, unenrolled) as lists of
    (device pk, owner pk, group index)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from apps.devices.choices import DeviceStatus, Platform
    from apps.devices.models import Device, DeviceGroup

    count = max(100, size // 20)
    password = make_password(None)  # unusable: these owners never log in
    owners = get_user_model().objects.bulk_create(
        get_user_model()(username=f"user{i}", email=f"user{i}@zylker.com", password=password)
        for i in range((count + 1) // 2)
    )
    devices = Device.objects.bulk_create(
        Device(
            name=f"laptop {i}",
            platform=Platform.MACOS if i % 3 else Platform.WINDOWS,
            serial_number=f"SN{i:07d}",
            owner=owners[i // 2],
            status=DeviceStatus.UNENROLLED if i % 50 == 49 else DeviceStatus.ENROLLED,
            enrolled_at=now - 400 * DAY,
        )
        for i in range(count)
    )
    groups = list(DeviceGroup.objects.order_by("name").values_list("pk", flat=True))
    Membership = DeviceGroup.devices.through
    Membership.objects.bulk_create(
        Membership(devicegroup_id=groups[i % len(groups)], device_id=device.pk)
        for i, device in enumerate(devices)
    )
    seed_deliveries(devices, profiles, now)
    rows = [(device.pk, device.owner_id, i % len(groups)) for i, device in enumerate(devices)]
    enrolled = [
        row for row, d in zip(rows, devices, strict=True) if d.status == DeviceStatus.ENROLLED
    ]
    unenrolled = [
        row for row, d in zip(rows, devices, strict=True) if d.status != DeviceStatus.ENROLLED
    ]
    return enrolled, unenrolled


def seed_deliveries(devices: list, profiles: dict, now: datetime.datetime) -> None:
    """Installed: the profiles of the device's group. Removed: the retired profile, and
    every profile of an unenrolled device."""
    from apps.devices.choices import DeviceStatus
    from apps.profiles.choices import DeliveryStatus
    from apps.profiles.models import Delivery

    def deliveries() -> Iterator[dict]:
        for i, device in enumerate(devices):
            gone = device.status != DeviceStatus.ENROLLED
            for slug in (*GROUP_PROFILES[i % len(GROUP_PROFILES)], RETIRED):
                removed = gone or slug == RETIRED
                yield {
                    "device_id": device.pk,
                    "profile_id": profiles[slug],
                    "status": DeliveryStatus.REMOVED if removed else DeliveryStatus.INSTALLED,
                    "delivered_version": 1,
                    "delivered_generation": 1,
                    "delivered_at": now - 300 * DAY,
                    "acknowledged_at": now - 300 * DAY,
                    "updated_at": now - 300 * DAY,
                }

    insert(Delivery, deliveries())


def pem_pool(ca, rng: random.Random, count: int = 8) -> list[str]:
    """Real RSA 2048 leaf certificates the CA signed: the PEM the bulk rows carry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from apps.pki import crypto

    pool = []
    for i in range(count):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zylker"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"SN{i:07d}"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(rng.getrandbits(159))
            .not_valid_before(now)
            .not_valid_after(now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(f"user{i}@zylker.com")]),
                critical=False,
            )
            .sign(ca.load_private_key(), hashes.SHA256())
        )
        pool.append(crypto.cert_pem(cert))
    return pool


def seed_certificates(
    world: World, fixtures: Fixtures, rng: random.Random, now: datetime.datetime
) -> None:
    """The certificates, in a random order of their states, inserted in batches."""
    from apps.certificates.models import Certificate

    order = []
    for state, (per_mille, _) in STATES.items():
        order += [state] * (world.size * per_mille // 1000)
    order += [ACTIVE] * (world.size - len(order))
    rng.shuffle(order)
    world.states.update(order)
    insert(
        Certificate,
        (
            certificate_fields(state, index, world, fixtures, rng, now)
            for index, state in enumerate(order)
        ),
    )


def insert(model: type, rows: Iterable[dict]) -> None:
    """Insert ``rows`` (field attname -> value; missing fields take their default): COPY
    on PostgreSQL, ``bulk_create`` in batches elsewhere. COPY skips the ORM's per-value
    preparation, which takes most of a bulk_create's time."""
    from django.db import connection

    if connection.vendor != "postgresql":
        for batch in batched(rows, BATCH):
            model.objects.bulk_create(model(**row) for row in batch)
        return
    from psycopg import sql

    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    defaults = {field.attname: field.get_default() for field in fields}
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table),
        sql.SQL(", ").join(sql.Identifier(field.column) for field in fields),
    )
    with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row([row.get(name, default) for name, default in defaults.items()])


def batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def certificate_fields(
    state: str,
    index: int,
    world: World,
    fixtures: Fixtures,
    rng: random.Random,
    now: datetime.datetime,
) -> dict:
    """The columns of one certificate in ``state``."""
    from apps.certificates.choices import CertificateSource

    cause = REVOKE_CAUSES[index % len(REVOKE_CAUSES)] if state == REVOKE_DUE else "missing"
    pool = fixtures.unenrolled if cause == "unenrolled" else fixtures.enrolled
    device, owner, group = pool[rng.randrange(len(pool))]
    slug = "wifi" if cause == "unassigned" else pick_template(state, group, rng)
    spec, serial = SPECS[slug], format(rng.getrandbits(159), "x")
    profile = fixtures.profiles[RETIRED if cause == "unassigned" else slug]
    if state == RENEWAL_DUE:
        world.carriers.add((device, fixtures.profiles[slug]))
        profile = None if index % 10 == 0 else profile  # found through its template
    return {
        "ca_id": fixtures.ca_id,
        "template_id": fixtures.templates[slug],
        "serial": serial,
        "subject": f"CN=SN{device:07d},OU=user{owner},O=Zylker",
        "subject_alt_names": f"email:user{owner}@zylker.com\ndns:sn{device}.devices.zylker.com",
        "fingerprint_sha256": hashlib.sha256(serial.encode()).hexdigest(),
        "certificate_pem": fixtures.pem_pool[index % len(fixtures.pem_pool)],
        "source": CertificateSource.SERVER_GENERATED
        if spec.server_keys
        else CertificateSource.SCEP,
        "user_id": owner,
        "device_id": device,
        "profile_id": profile,
        **lifecycle_fields(state, cause, spec, rng, now),
    }


def pick_template(state: str, group: int, rng: random.Random) -> str:
    """A template the device's group has a profile for, among those ``state`` allows."""
    offered = GROUP_PROFILES[group]
    allowed = STATES[state][1] if state in STATES else offered
    return rng.choice([slug for slug in offered if slug in allowed])


def lifecycle_fields(
    state: str, cause: str, spec: TemplateSpec, rng: random.Random, now: datetime.datetime
) -> dict:
    """Validity dates, status and pending revocation of a certificate in ``state``."""
    from apps.certificates.choices import CertificateStatus

    in_window = state in (RENEWAL_DUE, TRIGGERED, NO_AUTO_RENEWAL)
    if in_window:  # remaining time in (1 h, window - 1 h): at most the time elapsed
        remaining = HOUR + rng.random() * (spec.window - 2 * HOUR)
    else:
        remaining = spec.window + DAY + rng.random() * (spec.validity - spec.window - 2 * DAY)
    not_before = now + remaining - spec.validity
    fields = {"not_before": not_before, "not_after": now + remaining, "created_at": not_before}
    if state == TRIGGERED:
        fields["renewal_triggered_at"] = now - 2 * HOUR
    if state in (REVOKE_DUE, REMOVE_DUE, GRACE_RUNNING):
        grace = HOUR * (24 if spec.grace_hours is None else spec.grace_hours)
        due = now + (HOUR + rng.random() * 20 * HOUR) * (1 if state == GRACE_RUNNING else -1)
        superseded = cause == "superseded"
        fields |= {
            "status": CertificateStatus.SUPERSEDED
            if superseded
            else CertificateStatus.PENDING_REVOCATION,
            "pending_revocation_cause": cause,
            "pending_revocation_since": due - grace,
            "revoke_after": due,
        }
    return fields


# --- the measured process -------------------------------------------------------------


def measure_child(sweep: str, *, trace: bool) -> int:
    """Run one sweep in this fresh process and print its measurements as JSON."""
    setup_django()
    from django.db import connection

    work = prepare(sweep)
    crl_split = {}
    if trace and sweep == "revocation":
        split_crl_peak(crl_split)
    connection.ensure_connection()
    backend = backend_pid()
    statements = Counter()

    def count(execute: Callable, sql: str, params, many: bool, context: dict):
        statements["executemany" if many else "execute"] += 1
        return execute(sql, params, many, context)

    reset_peak_rss()
    rss_before = current_rss_kib()
    before = cpu_sample(backend)
    if trace:
        tracemalloc.start()
    with connection.execute_wrapper(count):
        result = work()
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    if crl_split:  # the peak was reset before the CRL publication
        traced_peak = max(traced_peak, crl_split["traced_peak_before_crl"])
    tracemalloc.stop()
    after = cpu_sample(backend)
    rss_peak = peak_rss_kib()
    print(
        json.dumps(
            {
                "result": result,
                "queries": sum(statements.values()),
                "traced_peak": traced_peak,
                **crl_split,
                "rss_before_kib": rss_before,
                "rss_peak_kib": rss_peak,
                **{key: after[key] - before[key] for key in after},
            }
        )
    )
    return 0


def prepare(sweep: str) -> Callable[[], dict]:
    """The call to measure, with what it needs loaded first (imports, the CA)."""
    from apps.certificates import services
    from apps.pki.models import CertificateAuthority
    from apps.pki.revocation import publish_crl

    if sweep == "renewal":
        return services.sweep_renewals
    if sweep == "revocation":
        return services.sweep_revocations
    ca = CertificateAuthority.objects.get(slug=CA_SLUG)

    def crl() -> dict:
        row = publish_crl(ca)
        return {"CRL entries": row.revoked_count, "CRL number": row.number}

    return crl


def split_crl_peak(peaks: dict) -> None:
    """Instrument the revocation sweep's last step, the CRL publication, to record the
    traced peak before it and during it apart (``peaks``): the grace periods are batched,
    a CRL holds every entry. Measurement only: the step itself runs unchanged."""
    from apps.certificates import services

    publish = services.publish_stale_crls

    def measured() -> int:
        peaks["traced_peak_before_crl"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        try:
            return publish()
        finally:
            peaks["traced_peak_crl"] = tracemalloc.get_traced_memory()[1]

    services.publish_stale_crls = measured


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux), so that the peak read after the run is the
    run's, not that of importing and setting up."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def current_rss_kib() -> int:
    return proc_status_kib("VmRSS")


def peak_rss_kib() -> int:
    """The peak RSS since ``reset_peak_rss``. Read from /proc: ``getrusage``'s ru_maxrss is
    at least the parent's RSS when it forked this process (Linux carries it across exec),
    here the seeding parent's; it is the fallback where /proc is missing."""
    return proc_status_kib("VmHWM")


def proc_status_kib(key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def backend_pid() -> int | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def cpu_sample(backend: int | None) -> dict[str, float]:
    """Wall time, this process's CPU, the PostgreSQL backend's CPU (when it runs on this
    machine) and the whole machine's busy CPU, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    backend_cpu = 0.0
    if backend is not None:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            backend_cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    busy, steal, _ = machine_cpu()
    return {
        "seconds": time.perf_counter(),
        "cpu": time.process_time(),
        "db_cpu": backend_cpu,
        "machine_busy": busy / ticks,
        "machine_steal": steal / ticks,
    }


def machine_cpu() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of all cores since boot, from /proc/stat. Steal is
    time the hypervisor gave this VM's CPUs to others: it slows every process here."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def background_busy(seconds: float = 1.0) -> float:
    """The fraction of all cores busy over ``seconds``: what other processes take."""
    busy_before, _, total_before = machine_cpu()
    time.sleep(seconds)
    busy_after, _, total_after = machine_cpu()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def run_child(sweep: str, *, trace: bool) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", sweep]
    command += ["--trace"] if trace else []
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SetupFailed(f"{sweep} did not finish in {CHILD_TIMEOUT} s") from None
    if done.returncode != 0:
        raise SetupFailed(f"{sweep} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- checking the work ----------------------------------------------------------------


def verify(sweep: str, world: World, measured: dict) -> list[tuple[str, bool]]:
    """(what, whether it holds) for the work ``sweep`` was to do on ``world``."""
    return {"renewal": verify_renewal, "revocation": verify_revocation, "crl": verify_crl}[sweep](
        world, measured["result"]
    )


def verify_renewal(world: World, result: dict) -> list[tuple[str, bool]]:
    from apps.certificates.models import Certificate
    from apps.profiles.models import Delivery

    marked = Certificate.objects.filter(renewal_triggered_at__isnull=False).count()
    generations = Counter(Delivery.objects.values_list("generation", flat=True).order_by())
    bumped = sum(count for generation, count in generations.items() if generation > 1)
    return [
        (
            f"re-triggered {result['renewals re-triggered']} == due {world.renewals}",
            result["renewals re-triggered"] == world.renewals,
        ),
        (
            f"marked {marked} == due + marked before {world.renewals + world.states[TRIGGERED]}",
            marked == world.renewals + world.states[TRIGGERED],
        ),
        (
            f"deliveries redelivered {bumped} == carriers {len(world.carriers)} "
            f"(by generation: {dict(sorted(generations.items()))})",
            bumped == len(world.carriers),
        ),
    ]


def verify_revocation(world: World, result: dict) -> list[tuple[str, bool]]:
    from apps.certificates.choices import CertificateStatus
    from apps.certificates.models import Certificate

    statuses = Counter(Certificate.objects.values_list("status", flat=True).order_by())
    expected = {
        "revoked": world.revocations,
        "removed": world.removals,
        "revocations started": 0,
        "pending revocations cancelled": 0,
        "CRLs published": 1,
    }
    checks = [
        (f"{key} {result[key]} == {value}", result[key] == value) for key, value in expected.items()
    ]
    for status, value in (
        (CertificateStatus.REVOKED, world.revocations),
        (CertificateStatus.REMOVED, world.removals),
    ):
        checks.append((f"{status} rows {statuses[status]} == {value}", statuses[status] == value))
    return checks


def verify_crl(world: World, result: dict) -> list[tuple[str, bool]]:
    """The published CRL, read by ``cryptography``: signed by the CA, listing exactly the
    serials of the revoked rows."""
    from cryptography import x509

    from apps.certificates.choices import CertificateStatus
    from apps.certificates.models import Certificate
    from apps.pki.models import CertificateAuthority, CertificateRevocationList

    ca = CertificateAuthority.objects.get(slug=CA_SLUG)
    crl = x509.load_der_x509_crl(bytes(CertificateRevocationList.objects.get(ca=ca).der))
    listed = {entry.serial_number for entry in crl}
    revoked = Certificate.objects.filter(ca=ca, status=CertificateStatus.REVOKED)
    serials = {int(serial, 16) for serial in revoked.values_list("serial", flat=True)}
    return [
        ("CRL signature valid", crl.is_signature_valid(ca.certificate.public_key())),
        (f"CRL entries {len(crl)} == revoked {world.revocations}", len(crl) == world.revocations),
        ("CRL serials == revoked rows' serials", listed == serials),
        (f"CRL number {result['CRL number']} == 2", result["CRL number"] == 2),
    ]


def describe(measured: dict) -> str:
    return ", ".join(f"{value} {key}" for key, value in measured["result"].items())


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One sweep at one size: its timed run and its traced run."""

    size: int
    sweep: str
    world: World
    timed: dict
    traced: dict

    @property
    def seconds(self) -> float:
        return self.timed["seconds"]

    @property
    def peak_mib(self) -> float:
        return self.traced["traced_peak"] / MIB

    @property
    def batched_peak_mib(self) -> float:
        """The peak of the batched work: for the revocation sweep, before its CRL."""
        return self.traced.get("traced_peak_before_crl", self.traced["traced_peak"]) / MIB

    @property
    def work(self) -> str:
        if self.sweep == "renewal":
            return f"{self.world.renewals} re-triggered"
        if self.sweep == "revocation":
            return f"{self.world.revocations} revoked, {self.world.removals} removed"
        return f"{self.world.revocations} entries"

    def others(self) -> float:
        """CPU of other processes during the timed run, as a fraction of the machine."""
        own = self.timed["cpu"] + self.timed["db_cpu"]
        return max(0.0, self.timed["machine_busy"] - own) / self.machine_seconds

    def steal(self) -> float:
        """CPU time the hypervisor took during the timed run, as a fraction of the machine."""
        return self.timed["machine_steal"] / self.machine_seconds

    @property
    def machine_seconds(self) -> float:
        return self.timed["seconds"] * (os.cpu_count() or 1)


def print_results(rows: list[Row], vendor: str) -> None:
    print(f"\nLifecycle sweeps on {vendor}, {os.cpu_count()} cores")
    print(
        f"{'certs':>7}  {'sweep':<10} {'work':<28} {'seconds':>7} {'queries':>7} "
        f"{'peak MiB':>8} {'RSS MiB (+growth)':>17}"
    )
    for row in rows:
        rss = row.timed["rss_peak_kib"] / 1024
        growth = rss - row.timed["rss_before_kib"] / 1024
        print(
            f"{row.size:>7}  {row.sweep:<10} {row.work:<28} {row.seconds:7.2f} "
            f"{row.timed['queries']:>7} {row.peak_mib:8.1f} {rss:9.0f} (+{growth:.0f})"
        )
    splits = [
        f"{row.size}: {row.batched_peak_mib:.1f} + {row.traced['traced_peak_crl'] / MIB:.1f}"
        for row in rows
        if row.sweep == "revocation"
    ]
    print(f"revocation peak MiB, grace periods + its CRL publication: {'; '.join(splits)}")
    print("\nWhere the time went (timed runs): CPU seconds of the bench process and of its")
    print("PostgreSQL backend (SQLite: inside the bench process); the share of the machine's")
    print("CPU that other processes used, and that the hypervisor stole")
    print(
        f"{'certs':>7}  {'sweep':<10} {'seconds':>7} {'python':>7} {'database':>8} "
        f"{'others':>6} {'steal':>6}"
    )
    for row in rows:
        print(
            f"{row.size:>7}  {row.sweep:<10} {row.seconds:7.2f} {row.timed['cpu']:7.2f} "
            f"{row.timed['db_cpu']:8.2f} {row.others():6.0%} {row.steal():6.0%}"
        )


def judge(rows: list[Row], checks: list) -> bool:
    """Print PASS/FAIL for the work checks and per target; whether all passed."""
    ok = all(passed for *_, passed in checks)
    print(f"\nwork done == work seeded ({len(checks)} checks): {verdict(ok)}")
    by_key = {(row.size, row.sweep): row for row in rows}
    sizes = sorted({row.size for row in rows})
    if TARGET_SIZE in sizes:
        for sweep, limit in TARGET_SECONDS.items():
            seconds = by_key[TARGET_SIZE, sweep].seconds
            passed = seconds < limit
            ok &= passed
            print(f"{sweep} at {TARGET_SIZE}: {seconds:.2f} s < {limit:.0f} s: {verdict(passed)}")
    else:
        print(f"time targets not judged: they are set for {TARGET_SIZE} certificates")
    judged = [size for size in sizes if size >= FLAT_MEMORY_FROM]
    if len(judged) > 1:
        ok &= judge_memory(by_key, judged)
    else:
        print(f"memory not judged: it needs two sizes of at least {FLAT_MEMORY_FROM}")
    return ok


def judge_memory(by_key: dict, sizes: list[int]) -> bool:
    """The batched work's peak flat from the smallest size to the largest; the CRL's
    peak per entry, for information."""
    ok = True
    for sweep, label in (("renewal", "renewal"), ("revocation", "revocation before its CRL")):
        low = by_key[sizes[0], sweep].batched_peak_mib
        high = by_key[sizes[-1], sweep].batched_peak_mib
        passed = high <= FLAT_MEMORY_RATIO * low
        ok &= passed
        print(
            f"{label} peak memory {low:.1f} MiB at {sizes[0]}, {high:.1f} MiB at "
            f"{sizes[-1]} (<= {FLAT_MEMORY_RATIO}x): {verdict(passed)}"
        )
    per_entry = [
        f"{by_key[size, 'crl'].traced['traced_peak'] / by_key[size, 'crl'].world.revocations:.0f}"
        for size in sizes
    ]
    print(
        "CRL peak memory grows with its entries (not judged: a CRL holds them all): "
        f"{', '.join(per_entry)} bytes per entry"
    )
    return ok


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
