"""The ``openssl`` CLI as an independent verifier of what mdmcerts issues."""

import shutil
import subprocess
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    if OPENSSL is None:
        pytest.fail("the openssl CLI is required (Debian package openssl; .ci/run installs it)")
    return subprocess.run(
        [OPENSSL, *args], input=input, capture_output=True, timeout=30, check=False
    )


def verify(
    leaf_pem: str, *, root_pem: str, untrusted_pem: str = "", tmp: Path
) -> subprocess.CompletedProcess:
    (tmp / "root.pem").write_text(root_pem)
    (tmp / "leaf.pem").write_text(leaf_pem)
    args = ["verify", "-x509_strict", "-CAfile", str(tmp / "root.pem")]
    if untrusted_pem:
        (tmp / "untrusted.pem").write_text(untrusted_pem)
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    return openssl(*args, str(tmp / "leaf.pem"))
