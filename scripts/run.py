#!/usr/bin/env python3
"""Run mdmcerts for development: gunicorn, a Celery worker and Celery beat, together.

``make run`` calls this after migrating and collecting static files. It reads the demo
credentials from ``manage.py bootstrap --demo --json`` (creating the demo if it is
missing), starts the three processes, prefixes their output with their name, and prints
the console URL and credentials once the web server answers.

Ctrl-C or SIGTERM stops all three: SIGTERM to each, a wait of ``RUN_STOP_TIMEOUT``
seconds (default 20), then SIGKILL; the exit status is 0. A second Ctrl-C kills at once.
If one process dies on its own, the others are stopped and the exit status is 1.

Environment: ``HOST`` (default 127.0.0.1), ``PORT`` (default 8000), ``WEB_CONCURRENCY``
(gunicorn workers, default 2), ``CELERY_CONCURRENCY`` (default 2), read from the
environment only; ``PUBLIC_BASE_URL``, unless the environment or ``.env`` sets it, becomes
``http://HOST:PORT``. Every other variable reaches Django unchanged.

Pure standard library, so it runs with any Python 3.11+ that has the requirements.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.2
# Listening on every interface; the URLs shown and the readiness probe use loopback then.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 (recognised here, not bound)
OUTPUT_LOCK = threading.Lock()


@dataclass
class Config:
    """Where to listen and how long to wait, from the environment."""

    host: str
    port: int
    stop_timeout: float
    env: dict[str, str]

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Config:
        host = environ.get("HOST", "127.0.0.1")
        port = int(environ.get("PORT", "8000"))
        env = dict(environ)
        if "PUBLIC_BASE_URL" not in env and "PUBLIC_BASE_URL" not in dotenv_keys(ROOT / ".env"):
            shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
            env["PUBLIC_BASE_URL"] = f"http://{shown}:{port}"
        env["PYTHONUNBUFFERED"] = "1"
        return cls(
            host=host, port=port, env=env, stop_timeout=float(environ.get("RUN_STOP_TIMEOUT", "20"))
        )


@dataclass
class Child:
    """One supervised process, leader of its own process group."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        # A session of its own: the terminal's Ctrl-C reaches only the supervisor, which
        # then stops each leader and finally sweeps its group (gunicorn and pool workers).
        self.process = subprocess.Popen(  # noqa: S603 (our own argv, no shell)
            self.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pump = threading.Thread(
            target=forward, args=(self.name, self.process.stdout), daemon=True
        )
        self.pump.start()
        say(f"started {self.name} (pid {self.process.pid}): {' '.join(self.argv[1:])}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Ask the leader to shut down; it stops its own workers (Celery's pool children
        must not get SIGTERM directly: the worker's warm shutdown would hang)."""
        if self.running and self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group, even after its leader exited."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def dotenv_keys(path: Path) -> set[str]:
    """Names set in a ``.env`` file (settings read it; a value there must not be overridden)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return set()
    keys = set()
    for line in lines:
        name, sep, _ = line.strip().removeprefix("export ").partition("=")
        if sep and name and not name.startswith("#"):
            keys.add(name.strip())
    return keys


def say(message: str, name: str = "run") -> None:
    """Print one line with a process-name prefix, never interleaved with another."""
    with OUTPUT_LOCK:
        sys.stdout.write(f"{name:<6}| {message}\n")
        sys.stdout.flush()


def forward(name: str, stream: IO[bytes] | None) -> None:
    """Copy a child's output line by line, prefixed with its name."""
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        say(raw.decode(errors="replace").rstrip("\n"), name)
    stream.close()


def children(config: Config) -> list[Child]:
    """The three processes, run with this interpreter (the project's virtualenv)."""
    python = sys.executable
    web = [python, "-m", "gunicorn", "mdmcerts.wsgi:application"]
    web += ["--bind", f"{config.host}:{config.port}"]
    web += ["--workers", config.env.get("WEB_CONCURRENCY", "2"), "--graceful-timeout", "10"]
    # gunicorn's default control socket is one path in $HOME, shared by every instance.
    web += ["--access-logfile", "-", "--no-control-socket"]
    # SCEP PKIOperation by GET carries the whole message in the URL (about 3.5 KB for an
    # RSA 2048 request, more for 4096): gunicorn's default 4094-byte line is too short.
    web += ["--limit-request-line", "16384"]
    celery = [python, "-m", "celery", "--app", "mdmcerts"]
    worker = [*celery, "worker", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    worker += ["--concurrency", config.env.get("CELERY_CONCURRENCY", "2")]
    # The scheduler is settings.CELERY_BEAT_SCHEDULER (django-celery-beat's).
    beat = [*celery, "beat", "--loglevel", "INFO"]
    return [Child("web", web), Child("worker", worker), Child("beat", beat)]


def demo_credentials(config: Config) -> dict[str, str | None] | None:
    """``bootstrap --demo --json``'s answer, or None (with the reason printed) on failure."""
    result = subprocess.run(
        [sys.executable, "manage.py", "bootstrap", "--demo", "--json"],
        cwd=ROOT,
        env=config.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        check=False,
    )
    if result.returncode != 0:
        say(f"bootstrap --demo failed (exit {result.returncode}); did `manage.py migrate` run?")
        return None
    return json.loads(result.stdout)


def banner(demo: dict[str, str | None]) -> str:
    password = demo.get("admin_password") or "(changed since bootstrap; not shown)"
    portal_password = demo.get("portal_password") or "(changed since bootstrap; not shown)"
    lines = [
        f"Console:   {demo.get('admin_url')}",
        f"Username:  {demo.get('admin_username')}",
        f"Password:  {password}",
        f"API token: {demo.get('api_token') or '(not usable)'}",
        f"End user:  {demo.get('portal_username')} / {portal_password}",
        f"Enrollment code: {demo.get('enrollment_code') or '(not usable)'}",
        "Press Ctrl-C to stop.",
    ]
    rule = "=" * 64
    return "\n".join([rule, *(f"  {line}" for line in lines), rule])


def port_open(host: str, port: int) -> bool:
    target = ("::1" if host == "::" else "127.0.0.1") if host in WILDCARD_HOSTS else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Starts the children, watches them, and stops them all on a signal or a death."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.kill_now = threading.Event()

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_requested.is_set():
            self.kill_now.set()
        self.stop_requested.set()

    def run(self, demo: dict[str, str | None]) -> int:
        """Start, watch, stop; return the exit status."""
        self.children = children(self.config)
        for child in self.children:
            child.start(self.config.env)
        died = self.watch(demo)
        if died is not None:
            code = died.process.returncode if died.process else None
            say(f"{died.name} exited on its own (status {code}); stopping the others")
        else:
            say("stopping (signal received)")
        self.stop()
        return 0 if died is None else 1

    def watch(self, demo: dict[str, str | None]) -> Child | None:
        """Wait for a stop request (None) or the first child that exits (that child)."""
        shown = False
        while not self.stop_requested.wait(POLL_SECONDS):
            for child in self.children:
                if not child.running:
                    return child
            if not shown and port_open(self.config.host, self.config.port):
                with OUTPUT_LOCK:
                    print(banner(demo), flush=True)
                shown = True
        return None

    def stop(self) -> None:
        """SIGTERM every leader, wait, then SIGKILL what is left (grandchildren included)."""
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + self.config.stop_timeout
        while any(c.running for c in self.children) and time.monotonic() < deadline:
            if self.kill_now.wait(POLL_SECONDS):
                break
        for child in self.children:
            if child.running:
                say(f"{child.name} did not stop in time; killing it")
            child.kill_group()
        for child in self.children:
            if child.process is not None:
                child.process.wait()
                if child.pump is not None:
                    child.pump.join(timeout=2)
                say(f"{child.name} stopped (status {child.process.returncode})")


def main() -> int:
    config = Config.from_environ(dict(os.environ))
    supervisor = Supervisor(config)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    demo = demo_credentials(config)
    if supervisor.stop_requested.is_set():
        return 0
    if demo is None:
        return 1
    return supervisor.run(demo)


if __name__ == "__main__":
    sys.exit(main())
