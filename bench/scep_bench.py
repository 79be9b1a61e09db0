"""SCEP enrollment speed: mdmcerts under gunicorn against micromdm's scepserver, in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mdmcerts_bench \\
        .venv/bin/python bench/scep_bench.py [--requests 200] [--concurrency 1,4,8]
    .venv/bin/python bench/scep_bench.py     # without DATABASE_URL: SQLite

Both servers listen on 127.0.0.1 ports of their own (scepserver 2.1 has no bind option and
listens on every interface; the load goes to 127.0.0.1 only):
- mdmcerts: migrated and bootstrapped (``bootstrap --demo``: a static-challenge template
  whose subject comes from the request), then gunicorn (``--worker-class``, by default
  gevent: one worker per core, each with a pool of PostgreSQL connections,
  ``DATABASE_POOL_MAX_SIZE``), DEBUG off. With DATABASE_URL on PostgreSQL the run uses a
  database of its own on that server, ``<name>_bench`` (or the URL's name when it already
  ends in ``_bench``), created afresh and dropped at the end; otherwise SQLite in a
  temporary MDMCERTS_VAR_DIR.
- micromdm: ``scepserver`` with a fresh RSA 2048 CA and the same static challenge.

Before timing it builds the load: per request a fresh RSA 2048 key (the same keys for both
servers, so both do the same crypto), a CSR with a unique CN and the challenge, and a
PKCSReq signed with SHA-256 and encrypted with AES-128-CBC (which both accept) to the
server's RA (mdmcerts) or CA (scepserver). Each concurrency level sends its own slice of
the load to each server over ``http.client`` connections (kept alive where the server
allows), bounded by a per-request timeout and a per-level time budget; the replies are
verified after timing. Each level runs ``--rounds`` times, the servers taking turns to go
first, each round on a fresh slice: the ratio of each round is printed, and the table
pools the rounds (a burst of other work on the machine then moves one round, not the
result).

Prints, per server and concurrency: enrollments per second, p50/p99 latency, failed
enrollments (anything but a verified SUCCESS) and the ratio mdmcerts/micromdm; then checks
that mdmcerts recorded exactly one Certificate row per SUCCESS. Exits 1 if that check
fails, 2 if setting up fails. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID, NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.core.devsecrets import new_kek, new_secret_key  # noqa: E402
from apps.scep.protocol import (  # noqa: E402
    ContentCipher,
    MessageType,
    PKIStatus,
    ProtocolError,
    client,
)
from bench.common import SetupFailed, fresh_postgres_database  # noqa: E402

MDMCERTS, MICROMDM = "mdmcerts", "micromdm"
SERVERS = (MDMCERTS, MICROMDM)
HOST = "127.0.0.1"
STARTUP_SECONDS = 60
STOP_SECONDS = 10
PKI_HEADERS = {"Content-Type": "application/x-pki-message"}
HTTP_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Server:
    """A running SCEP server: where to POST PKIOperations and whom to encrypt to."""

    name: str
    port: int
    path: str
    ca_certificates: list[x509.Certificate]

    @property
    def recipient(self) -> x509.Certificate:
        return client.select_recipient(self.ca_certificates)


@dataclass(frozen=True)
class Enrollment:
    """One prebuilt request: its key, signer certificate and a pkiMessage per server."""

    key_der: bytes
    signer_der: bytes
    transaction_id: str
    messages: dict[str, tuple[bytes, bytes]]  # server name -> (pkiMessage, senderNonce)


@dataclass(frozen=True)
class Reply:
    """What one POST got back (status 0: no HTTP answer in time)."""

    index: int
    status: int
    body: bytes
    seconds: float


@dataclass
class LevelResult:
    """One server at one concurrency level."""

    server: str
    concurrency: int
    planned: int
    elapsed: float
    latencies: list[float]
    succeeded: list[int] = field(default_factory=list)  # indexes of verified SUCCESS replies
    serials: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def sent(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        """Every planned request that did not end in SUCCESS, unsent ones included."""
        return self.planned - len(self.succeeded)

    @property
    def per_second(self) -> float:
        return len(self.succeeded) / self.elapsed if self.elapsed else 0.0


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.ExitStack() as stack:
            return run(args, stack)
    except SetupFailed as exc:
        print(f"scep_bench: setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scep_bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per server, level, round")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each level per server")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated levels")
    parser.add_argument("--warmup", type=int, default=16, help="requests per server first")
    # gevent, one worker per core: a request waiting on PostgreSQL's commit leaves the
    # process to another request's crypto, and two processes keep their caches warm where
    # four sync workers (the previous default) evict each other's: 4.1-4.6 against
    # 5.1-5.4 ms of worker CPU per enrollment (docs/benchmarks.md).
    parser.add_argument("--worker-class", choices=("gevent", "sync", "gthread"), default="gevent")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gunicorn worker processes"
    )
    parser.add_argument("--threads", type=int, default=1, help="gthread: threads per worker")
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=16,
        help="gevent: requests (and pooled database connections) per worker",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--level-budget", type=float, default=120.0, help="seconds per level")
    parser.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL bench db")
    args = parser.parse_args()
    args.levels = [int(level) for level in args.concurrency.split(",")]
    counts = (args.requests, args.rounds, args.workers, args.threads, args.worker_connections)
    if min(*counts, *args.levels) < 1 or args.warmup < 0:
        parser.error(
            "--requests, --rounds, --concurrency, --workers, --threads and "
            "--worker-connections must be positive"
        )
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="scep-bench-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    env, vendor = django_env(tmp, stack, keep_db=args.keep_db)
    challenge = prepare_mdmcerts(env)
    servers = {
        MDMCERTS: start_mdmcerts(env, tmp, stack, args),
        MICROMDM: start_scepserver(tmp, stack, challenge=challenge),
    }
    total = args.warmup + args.requests * len(args.levels) * args.rounds
    print(f"building {total} PKCSReqs per server (RSA 2048 keys, AES-128-CBC, SHA-256)...")
    load = build_load(total, challenge, servers)
    idle_before = background_busy()
    results = measure(args, servers, load)
    report(results, args, vendor)
    print(
        f"CPU used by other processes while both servers were idle, before/after timing: "
        f"{idle_before:.0%}/{background_busy():.0%} of the machine"
    )
    return 0 if durable(env, results) else 1


# --- mdmcerts -------------------------------------------------------------------------


def django_env(tmp: Path, stack: contextlib.ExitStack, *, keep_db: bool) -> tuple[dict, str]:
    """The environment for manage.py and gunicorn: DEBUG off, fresh secrets, the database."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured.startswith(("postgres://", "postgresql://", "pgsql://")):
        url, vendor = (
            fresh_postgres_database(configured, stack, suffix="_bench", keep=keep_db),
            "PostgreSQL",
        )
    else:
        url, vendor = f"sqlite:///{tmp / 'db.sqlite3'}", "SQLite"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MDMCERTS_VAR_DIR": str(tmp / "var"),
        "DEBUG": "false",
        "SECRET_KEY": new_secret_key(),
        "MDMCERTS_KEK": new_kek(),
        "ALLOWED_HOSTS": HOST,
        "CELERY_BROKER_URL": "memory://",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    return env, vendor


def prepare_mdmcerts(env: dict) -> str:
    """Migrate and bootstrap the demo; the demo template's static challenge."""
    manage(env, "migrate", "--noinput")
    demo = json.loads(manage(env, "bootstrap", "--demo", "--json"))
    if not demo.get("static_challenge"):
        raise SetupFailed("bootstrap --demo gave no static challenge")
    return demo["static_challenge"]


def manage(env: dict, *argv: str, stdin: str | None = None) -> str:
    """Run one manage.py command; its standard output (``SetupFailed`` if it fails)."""
    command = [sys.executable, "manage.py", *argv]
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        raise SetupFailed(f"manage.py {argv[0]} did not finish in 300 s") from None
    if result.returncode != 0:
        raise SetupFailed(f"manage.py {argv[0]} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def start_mdmcerts(
    env: dict, tmp: Path, stack: contextlib.ExitStack, args: argparse.Namespace
) -> Server:
    port = free_port()
    env = {**env, "PUBLIC_BASE_URL": f"http://{HOST}:{port}"}
    command = [sys.executable, "-m", "gunicorn", "mdmcerts.wsgi:application"]
    command += ["--bind", f"{HOST}:{port}", "--workers", str(args.workers)]
    command += ["--worker-class", args.worker_class]
    if args.worker_class == "gevent":
        command += ["--worker-connections", str(args.worker_connections)]
        env["DATABASE_POOL_MAX_SIZE"] = str(args.worker_connections)
    elif args.worker_class == "gthread":
        command += ["--threads", str(args.threads)]
    command += ["--no-control-socket", "--log-level", "warning", "--graceful-timeout", "5"]
    log = tmp / "gunicorn.log"
    process = start(command, env, log, stack)
    path = "/scep/demo/pkiclient.exe"
    certificates = ca_certs(port, path, process, log)
    return Server(MDMCERTS, port, f"{path}?operation=PKIOperation", certificates)


# --- micromdm -------------------------------------------------------------------------


def start_scepserver(tmp: Path, stack: contextlib.ExitStack, *, challenge: str) -> Server:
    binary = shutil.which("scepserver")
    if binary is None:
        raise SetupFailed("micromdm's scepserver is missing: apt-get install scep")
    depot = tmp / "depot"
    init = [binary, "ca", "-init", "-depot", str(depot), "-keySize", "2048"]
    done = subprocess.run(init, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SetupFailed(f"scepserver ca -init failed:\n{done.stderr}")
    port = free_port()
    command = [binary, "-depot", str(depot), "-port", str(port), "-challenge", challenge]
    log = tmp / "scepserver.log"
    process = start(command, dict(os.environ), log, stack)
    certificates = ca_certs(port, "/scep", process, log)
    return Server(MICROMDM, port, "/scep?operation=PKIOperation", certificates)


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start(
    command: list[str], env: dict, log: Path, stack: contextlib.ExitStack
) -> subprocess.Popen:
    """Start ``command`` in a session of its own (Ctrl-C reaches only this script, which
    stops the whole group) and register its stop."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop, process)
    return process


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def ca_certs(port: int, path: str, process: subprocess.Popen, log: Path) -> list[x509.Certificate]:
    """GetCACert, retried while the server starts (``SetupFailed`` if it never answers)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupFailed(f"{process.args[0]} exited ({process.returncode}):\n{tail(log)}")
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        with contextlib.closing(connection), contextlib.suppress(*HTTP_ERRORS):
            connection.request("GET", f"{path}?operation=GetCACert")
            response = connection.getresponse()
            if response.status == 200:
                return client.parse_ca_certs(response.read())
        time.sleep(0.1)  # polling a server that starts up
    raise SetupFailed(f"no GetCACert answer on port {port} in {STARTUP_SECONDS} s:\n{tail(log)}")


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# --- the load -------------------------------------------------------------------------


def build_load(count: int, challenge: str, servers: dict[str, Server]) -> list[Enrollment]:
    """``count`` enrollments, built on every core (key generation dominates)."""
    recipients = {
        name: server.recipient.public_bytes(serialization.Encoding.DER)
        for name, server in servers.items()
    }
    run_id = uuid.uuid4().hex[:8]
    jobs = [(f"bench-{run_id}-{index}", challenge, recipients) for index in range(count)]
    executor = ProcessPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        return list(executor.map(build_enrollment, jobs, chunksize=16))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def build_enrollment(job: tuple[str, str, dict[str, bytes]]) -> Enrollment:
    """One key, CSR and signer, and the PKCSReq encrypted to each server's recipient."""
    common_name, challenge, recipients = job
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        .sign(key, hashes.SHA256())
    )
    signer = client.self_signed_signer(key, subject)
    transaction_id = client.transaction_id_for(key.public_key())
    messages = {
        name: client.build_pki_message(
            message_type=MessageType.PKCS_REQ,
            payload=client.pkcs_req_payload(csr),
            transaction_id=transaction_id,
            signer_certificate=signer,
            signer_key=key,
            recipient_certificate=x509.load_der_x509_certificate(recipient),
            content_cipher=ContentCipher.AES_128_CBC,
        )
        for name, recipient in recipients.items()
    }
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    return Enrollment(key_der, signer_der, transaction_id, messages)


# --- sending --------------------------------------------------------------------------


def measure(
    args: argparse.Namespace, servers: dict[str, Server], load: list[Enrollment]
) -> list[LevelResult]:
    """Warm-up, then every level ``--rounds`` times against each server in turn (the
    first server alternating), each round on a slice of its own that both servers get;
    the rounds of a level are pooled into one result per server."""
    rounds = len(args.levels) * args.rounds
    slices = iter(chunks(load, [args.warmup] + [args.requests] * rounds))
    warmup = next(slices)
    results = []
    for name in SERVERS:
        results.append(level(servers[name], warmup, max(args.levels), args))
        say(results[-1], "warm-up")
    for concurrency in args.levels:
        pooled: dict[str, list[LevelResult]] = {name: [] for name in SERVERS}
        for round_number in range(args.rounds):
            part = next(slices)
            order = SERVERS if round_number % 2 == 0 else SERVERS[::-1]
            for name in order:
                pooled[name].append(level(servers[name], part, concurrency, args))
                say(pooled[name][-1], f"c={concurrency} round {round_number + 1}")
            ours, theirs = pooled[MDMCERTS][-1], pooled[MICROMDM][-1]
            if theirs.per_second:
                print(f"  round ratio {ours.per_second / theirs.per_second:.2f}x")
        results += [merged(pooled[name]) for name in SERVERS]
    return results


def merged(rounds: list[LevelResult]) -> LevelResult:
    """One result for the rounds of a level: counts, time and latencies added up."""
    first = rounds[0]
    total = LevelResult(first.server, first.concurrency, 0, 0.0, [])
    for result in rounds:
        total.planned += result.planned
        total.elapsed += result.elapsed
        total.latencies += result.latencies
        total.succeeded += result.succeeded
        total.serials += result.serials
        for why, count in result.failures.items():
            total.failures[why] = total.failures.get(why, 0) + count
    return total


def say(result: LevelResult, label: str) -> None:
    print(
        f"{label} {result.server}: {len(result.succeeded)}/{result.planned} SUCCESS, "
        f"{result.per_second:.1f} enrollments/s"
    )
    for why, count in result.failures.items():
        print(f"  {count} failed: {why}")


def chunks(items: list[Enrollment], sizes: list[int]) -> Iterator[list[Enrollment]]:
    start = 0
    for size in sizes:
        yield items[start : start + size]
        start += size


def level(
    server: Server, part: list[Enrollment], concurrency: int, args: argparse.Namespace
) -> LevelResult:
    """Send ``part`` to ``server`` from ``concurrency`` threads; verify the replies after."""
    bodies = [enrollment.messages[server.name][0] for enrollment in part]
    started = time.perf_counter()
    replies = send_all(server, bodies, concurrency, args.timeout, args.level_budget)
    elapsed = time.perf_counter() - started
    result = LevelResult(
        server.name, concurrency, len(part), elapsed, [reply.seconds for reply in replies]
    )
    if len(replies) < len(part):
        result.failures["not sent within --level-budget"] = len(part) - len(replies)
    for reply in replies:
        serial, why = verify(server, part[reply.index], reply)
        if serial is None:
            result.failures[why] = result.failures.get(why, 0) + 1
        else:
            result.succeeded.append(reply.index)
            result.serials.append(serial)
    return result


def send_all(
    server: Server, bodies: list[bytes], concurrency: int, timeout: float, budget: float
) -> list[Reply]:
    """POST every body (until the budget runs out) from ``concurrency`` threads, each on
    its own keep-alive connection."""
    jobs: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
    for job in enumerate(bodies):
        jobs.put(job)
    replies: list[Reply] = []  # list.append is atomic
    deadline = time.monotonic() + budget
    threads = [
        threading.Thread(
            target=sender, args=(server, jobs, replies, timeout, deadline), daemon=True
        )
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def sender(
    server: Server,
    jobs: queue.SimpleQueue[tuple[int, bytes]],
    replies: list[Reply],
    timeout: float,
    deadline: float,
) -> None:
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        try:
            index, body = jobs.get_nowait()
        except queue.Empty:
            break
        started = time.perf_counter()
        if connection is None:
            connection = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
        status, answer, reusable = post(connection, server.path, body)
        replies.append(Reply(index, status, answer, time.perf_counter() - started))
        if not reusable:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes, bool]:
    """(HTTP status, body, whether the connection can be reused); status 0 on any error."""
    try:
        connection.request("POST", path, body, PKI_HEADERS)
        response = connection.getresponse()
        answer = response.read()
    except HTTP_ERRORS:
        return 0, b"", False
    return response.status, answer, not response.will_close


def verify(server: Server, enrollment: Enrollment, reply: Reply) -> tuple[str | None, str]:
    """(serial in hex, "") if the reply is a CertRep SUCCESS for this request carrying a
    certificate for its key; (None, why not) for anything else."""
    if reply.status != 200:
        return None, f"HTTP {reply.status or 'error/timeout'}"
    key = serialization.load_der_private_key(
        enrollment.key_der, password=None, unsafe_skip_rsa_key_validation=True
    )  # generated by this run: the 30 ms consistency check tells nothing
    try:
        result = client.parse_cert_rep(
            reply.body,
            recipient_key=key,
            recipient_certificate=x509.load_der_x509_certificate(enrollment.signer_der),
            ra_certificates=server.ca_certificates,
            allow_single_des=server.name == MICROMDM,  # scepserver 2.1 answers with DES
        )
    except ProtocolError as exc:
        return None, f"unreadable CertRep: {exc.reason}"
    if result.status is not PKIStatus.SUCCESS:
        fail_info = result.fail_info.name if result.fail_info is not None else "-"
        return None, f"{result.status.name} {fail_info}: {result.fail_info_text or ''}"
    if (
        result.recipient_nonce != enrollment.messages[server.name][1]
        or result.transaction_id != enrollment.transaction_id
        or len(result.certificates) != 1
        or result.certificates[0].public_key() != key.public_key()
    ):
        return None, "SUCCESS that does not answer this request"
    return format(result.certificates[0].serial_number, "x"), ""


# --- results --------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return 1000 * ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def report(results: list[LevelResult], args: argparse.Namespace, vendor: str) -> None:
    measured = results[len(SERVERS) :]  # the warm-up is not reported
    print()
    print(
        f"SCEP PKCSReq enrollments, {args.rounds} x {args.requests} per server and level; "
        f"mdmcerts on {vendor}, gunicorn {gunicorn_shape(args)}; {os.cpu_count()} cores"
    )
    print("concurrency  server     enroll/s   p50 ms   p99 ms  failed  mdmcerts/micromdm")
    by_level = {(r.server, r.concurrency): r for r in measured}
    for concurrency in args.levels:
        ours, theirs = by_level[MDMCERTS, concurrency], by_level[MICROMDM, concurrency]
        ratio = ours.per_second / theirs.per_second if theirs.per_second else math.nan
        for result in (ours, theirs):
            shown = f"{ratio:.2f}x" if result is ours else ""
            print(
                f"{concurrency:>11}  {result.server:<9} {result.per_second:9.1f} "
                f"{percentile(result.latencies, 0.5):8.1f} "
                f"{percentile(result.latencies, 0.99):8.1f} {result.failed:>7}  {shown}"
            )


def gunicorn_shape(args: argparse.Namespace) -> str:
    if args.worker_class == "gevent":
        return f"{args.workers} gevent workers x {args.worker_connections} connections"
    if args.worker_class == "gthread":
        return f"{args.workers} gthread workers x {args.threads} threads"
    return f"{args.workers} sync workers"


def background_busy(seconds: float = 1.0) -> float:
    """The fraction of all cores busy over ``seconds`` (from /proc/stat): with both
    servers idle, what other processes take from the benchmark."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy_before, total_before = sample()
    time.sleep(seconds)
    busy_after, total_after = sample()
    return (busy_after - busy_before) / max(1, total_after - total_before)


COUNT_ROWS = """
import json, sys
from apps.certificates.models import Certificate
serials = json.load(sys.stdin)
found = Certificate.objects.filter(serial__in=serials).count()
print(json.dumps({"rows": Certificate.objects.count(), "found": found}))
"""


def durable(env: dict, results: list[LevelResult]) -> bool:
    """Exactly one Certificate row per SUCCESS mdmcerts gave (warm-up included)."""
    serials = [serial for r in results if r.server == MDMCERTS for serial in r.serials]
    stdout = manage(env, "shell", "-c", COUNT_ROWS, stdin=json.dumps(serials))
    counted = json.loads(stdout.strip().splitlines()[-1])
    ok = counted["rows"] == counted["found"] == len(serials)
    print(
        f"durability (mdmcerts): {counted['rows']} Certificate rows in the database, "
        f"{len(serials)} SUCCESS replies, {counted['found']} of their serials found: "
        + ("OK" if ok else "MISMATCH")
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
