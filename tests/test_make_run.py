"""``scripts/run.py``, the supervisor behind ``make run``: gunicorn, a Celery worker and
beat come up on the embedded defaults, and stop together, leaving no process behind."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.subprocesses import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60
STOP_TIMEOUT = 40
STARTED_RE = re.compile(r"^run +\| started (\w+) \(pid (\d+)\)")


def embedded_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """What ``make run`` gets on a fresh machine: SQLite and the filesystem broker under
    a private var dir, whatever DATABASE_URL or CELERY_BROKER_URL this run has."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "PUBLIC_BASE_URL")
    }
    return {**env, "MDMCERTS_VAR_DIR": str(var_dir), "DEBUG": "true", **extra}


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> Path:
    """A var dir that has been migrated and bootstrapped, as ``make run`` leaves it."""
    var_dir = tmp_path_factory.mktemp("var")
    for args in (["migrate", "--noinput"], ["bootstrap", "--demo"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=embedded_env(var_dir),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    return var_dir


class Supervised:
    """``scripts/run.py`` in a subprocess, its output collected line by line."""

    def __init__(self, var_dir: Path) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "scripts/run.py"],
            cwd=ROOT,
            env=embedded_env(var_dir, HOST="127.0.0.1", PORT=str(self.port), RUN_STOP_TIMEOUT="15"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def children(self) -> dict[str, int]:
        """``{"web": pid, "worker": pid, "beat": pid}`` as the supervisor announced them."""
        found = (STARTED_RE.match(line) for line in list(self.lines))
        return {m.group(1): int(m.group(2)) for m in found if m}

    def wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process.poll() is None, f"run.py exited early:\n{self.output}"
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}:\n{self.output}")

    def login_page_status(self) -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/admin/login/", timeout=2
            ) as response:
                return response.status
        except OSError:
            return None

    def kill_everything(self, pids: list[int]) -> None:
        """Clean-up after a failed test: nothing may outlive it."""
        for pid in [self.process.pid, *pids]:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (gunicorn workers, Celery pool processes)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [], list(pids)
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture
def supervised(var_dir) -> Iterator[Supervised]:
    run = Supervised(var_dir)
    pids: list[int] = []
    try:
        yield run
    finally:
        if run.process.poll() is None:
            pids = list(run.children().values())
            run.kill_everything(pids + descendants(pids))


def wait_for_all_three(run: Supervised) -> dict[str, int]:
    run.wait_until(lambda: run.login_page_status() == 200, "GET /admin/login/ to answer 200")
    run.wait_until(
        lambda: re.search(r"^worker\|.*celery@\S+ ready\.", run.output, re.M),
        "the Celery worker to be ready",
    )
    run.wait_until(
        lambda: re.search(r"^beat +\|.*beat: Starting", run.output, re.M), "Celery beat to start"
    )
    pids = run.children()
    assert sorted(pids) == ["beat", "web", "worker"]
    return pids


def test_ctrl_c_stops_web_worker_and_beat_cleanly(supervised):
    pids = wait_for_all_three(supervised)
    assert all(alive(pid) for pid in pids.values()), supervised.output
    tree = [*pids.values(), *descendants(list(pids.values()))]
    assert len(tree) >= 5  # gunicorn and the Celery worker have workers of their own
    assert f"Console:   http://127.0.0.1:{supervised.port}/admin/" in supervised.output
    assert re.search(r"Password:  [a-z2-9]{5}(-[a-z2-9]{5}){3}$", supervised.output, re.M)

    supervised.process.send_signal(signal.SIGINT)

    assert supervised.process.wait(timeout=STOP_TIMEOUT) == 0, supervised.output
    supervised.reader.join(timeout=5)
    leftovers = [pid for pid in tree if alive(pid)]
    assert leftovers == [], supervised.output
    for name in pids:
        assert f"run   | {name} stopped (status 0)" in supervised.output


def test_when_one_process_dies_the_others_are_stopped_and_it_fails(supervised):
    pids = wait_for_all_three(supervised)
    tree = [*pids.values(), *descendants(list(pids.values()))]

    os.kill(pids["beat"], signal.SIGKILL)

    assert supervised.process.wait(timeout=STOP_TIMEOUT) == 1, supervised.output
    supervised.reader.join(timeout=5)
    assert "beat exited on its own" in supervised.output
    assert [pid for pid in tree if alive(pid)] == [], supervised.output
