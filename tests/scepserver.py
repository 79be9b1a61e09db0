"""micromdm's ``scepserver`` (Debian package ``scep``) as an external SCEP CA for tests.

``running_scepserver`` (and the ``start_scepserver`` fixture on it) inits a fresh 2048-bit
CA in a depot and runs the server on a free port until the block (or test) ends.
scepserver 2.1 has no bind option (it listens on every interface), signs its CertReps
with SHA-1 and encrypts them with single DES-CBC whatever the request used.

Test modules take the fixtures they use by assignment (a plain import of a fixture that
is then a test's argument trips ruff's F811)::

    from tests import scepserver as scepserver_fixtures

    scepserver = scepserver_fixtures.scepserver
"""

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from apps.pki import external
from apps.pki.choices import ExternalChallengeType
from apps.pki.models import CertificateAuthority
from tests.factories import random_name
from tests.subprocesses import free_port

STATIC_CHALLENGE = "scep-secret"
STARTUP_TIMEOUT = 10
MISSING = "micromdm's scepserver is required: install the Debian package scep"


@dataclass(frozen=True)
class RunningScepServer:
    """A scepserver subprocess: its SCEP URL, its CA and the depot it writes to."""

    url: str
    ca_certificate: x509.Certificate
    ca_pem_path: Path
    depot: Path
    challenge: str

    def issued_count(self) -> int:
        """Certificates scepserver signed so far (its depot keeps one .pem per issue)."""
        return sum(1 for path in self.depot.glob("*.pem") if path.name != "ca.pem")


def _wait_until_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"scepserver exited:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a subprocess that starts up, not moving time
    pytest.fail(f"scepserver did not listen on port {port}:\n{log.read_text()}")


def _init_depot(binary: str, depot: Path) -> None:
    command = [binary, "ca", "-init", "-depot", str(depot), "-keySize", "2048"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def running_scepserver(
    workdir: Path, *, challenge: str = STATIC_CHALLENGE
) -> Iterator[RunningScepServer]:
    """scepserver with a fresh CA in ``workdir``, stopped when the block ends."""
    binary = shutil.which("scepserver")
    if binary is None:
        pytest.fail(MISSING)
    depot = workdir / "scepserver-depot"
    _init_depot(binary, depot)
    port, log = free_port(), workdir / "scepserver.log"
    # -allowrenew 0: a renewal enrolls the same subject again while the old one is valid.
    command = [
        binary, "-depot", str(depot), "-port", str(port),
        "-challenge", challenge, "-allowrenew", "0",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_listening(port, process, log)
        ca_pem_path = depot / "ca.pem"
        yield RunningScepServer(
            url=f"http://127.0.0.1:{port}/scep",
            ca_certificate=x509.load_pem_x509_certificate(ca_pem_path.read_bytes()),
            ca_pem_path=ca_pem_path,
            depot=depot,
            challenge=challenge,
        )
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_TIMEOUT)


@pytest.fixture
def start_scepserver() -> Iterator[Callable[..., RunningScepServer]]:
    """A factory: ``start_scepserver(tmp_path, challenge=...)`` runs one scepserver."""
    with contextlib.ExitStack() as running:

        def start(workdir: Path, *, challenge: str = STATIC_CHALLENGE) -> RunningScepServer:
            return running.enter_context(running_scepserver(workdir, challenge=challenge))

        yield start


@pytest.fixture
def scepserver(start_scepserver, tmp_path) -> RunningScepServer:
    """A running scepserver whose static challenge is ``scep-secret``."""
    return start_scepserver(tmp_path, challenge=STATIC_CHALLENGE)


def external_ca_for(server: RunningScepServer, **fields) -> CertificateAuthority:
    """A CA server of kind ``scep`` for ``server``: static challenge, CA pinned from its
    GetCACert, single DES accepted (scepserver 2.1 answers with nothing else)."""
    name = random_name("scepserver")
    challenge = fields.pop("static_challenge", server.challenge)
    fields.setdefault("scep_challenge_type", ExternalChallengeType.STATIC)
    fields.setdefault("scep_allow_single_des", True)
    fields.setdefault("scep_request_timeout_seconds", 10)
    ca = CertificateAuthority(name=name, slug=name, scep_url=server.url, **fields)
    ca.set_secret("scep_static_challenge", challenge)
    external.fetch_and_pin(ca)
    return external.save_external_ca(ca, before=None)
