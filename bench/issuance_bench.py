"""Issuance speed of the local CA: mdmcerts' issue_certificate against the openssl CLI.

Runs on the configured database (DATABASE_URL; SQLite under a temporary var dir when
unset). For the same CSRs it times, in one run:
- mdmcerts: ``issue_certificate`` (render, sign, insert the inventory row and the audit
  event in one transaction), in process;
- openssl: ``openssl x509 -req`` signing each CSR with the same CA key and extensions
  (one process per certificate, as scripts use it; nothing recorded).

    python bench/issuance_bench.py [--count 200] [--key rsa2048]

Prints certificates per second for each and the ratio mdmcerts/openssl.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(var_dir: str) -> None:
    os.environ.setdefault("MDMCERTS_VAR_DIR", var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mdmcerts.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--key", default="rsa2048", help="CA and CSR key algorithm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(tmp)
        report(*run(args.count, args.key, Path(tmp)))


def run(count: int, key_algorithm: str, tmp: Path) -> tuple[float, float, str]:
    from cryptography.hazmat.primitives import serialization

    from apps.certificates.services import issue_certificate
    from apps.enrollment.variables import values_for_user
    from tests.factories import force_ca, force_template, force_user, make_csr, make_key

    ca = force_ca(key_algorithm=key_algorithm)
    template = force_template(ca=ca, key_algorithm=key_algorithm)
    user = force_user()
    csrs = [make_csr(make_key(key_algorithm)) for _ in range(count)]
    issue_certificate(csrs[0], template, values_for_user(user), user=user)  # warm caches
    started = time.perf_counter()
    for csr in csrs:
        issue_certificate(csr, template, values_for_user(user), user=user)
    ours = time.perf_counter() - started

    key_file, ca_file, ext_file = tmp / "ca.key", tmp / "ca.pem", tmp / "ext.cnf"
    key_file.write_bytes(
        ca.load_private_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_file.write_text(ca.certificate_pem)
    ext_file.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    started = time.perf_counter()
    for csr in csrs:
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-CA",
                str(ca_file),
                "-CAkey",
                str(key_file),
                "-set_serial",
                "0x" + os.urandom(16).hex(),
                "-days",
                "365",
                "-sha256",
                "-extfile",
                str(ext_file),
                "-out",
                os.devnull,
            ],
            input=csr.public_bytes(serialization.Encoding.PEM),
            check=True,
            capture_output=True,
        )
    peer = time.perf_counter() - started
    key_file.unlink()
    from django.db import connection

    return count / ours, count / peer, f"{connection.vendor}, {key_algorithm}, {count} certs"


def report(ours: float, peer: float, what: str) -> None:
    print(f"issuance ({what})")
    print(f"  mdmcerts issue_certificate: {ours:8.1f} certificates/s")
    print(f"  openssl x509 -req:          {peer:8.1f} certificates/s")
    print(f"  ratio mdmcerts/openssl:     {ours / peer:8.2f}x")


if __name__ == "__main__":
    main()
