"""A look inside an uploaded PKCS#12 file (RFC 7292) before anything trusts it. Pure: bytes
and a password in, facts out, no ORM.

A PKCS#12 file names how many iterations each key derivation takes (its MAC, every
encrypted container, every encrypted private key), and a hostile file can ask for billions:
cryptography's loader would spend minutes on it. So every count is read here with
asn1crypto and checked against a cap first. Containers are decrypted here, with counts
already checked, because a private key inside one brings its own count that only shows once
it is open; that is also where the private keys are counted (the loader returns one of
them). The loader then runs on a file whose whole cost is known.

PKCS#12's own encryption schemes derive keys with its own KDF (RFC 7292 appendix B), which
cryptography does not offer, and legacy exports (macOS Keychain, older Windows, ``openssl
pkcs12 -legacy``) encrypt their certificates with 40-bit RC2, which cryptography offers only
with a 128-bit key: both are implemented here, decryption only.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from asn1crypto import algos, cms, pkcs12
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

MAX_ITERATIONS = 200_000  # per key derivation; exporters use 2,000 to 10,000
MAX_TOTAL_ITERATIONS = 600_000  # all derivations of one file together
MAX_NESTING = 3
HASHES = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# PKCS#12 password-based encryption: (key bytes, cipher). Always SHA-1 for the KDF.
PKCS12_PBE = {
    "pkcs12_sha1_tripledes_3key": (24, "3des"),
    "pkcs12_sha1_tripledes_2key": (16, "3des"),
    "pkcs12_sha1_rc2_128": (16, "rc2"),
    "pkcs12_sha1_rc2_40": (5, "rc2"),
}
PBES2_CIPHERS = {
    "aes128_cbc": algorithms.AES,
    "aes192_cbc": algorithms.AES,
    "aes256_cbc": algorithms.AES,
    "tripledes_3key": TripleDES,
}
REEXPORT = "Export it again with current settings (AES-256 and SHA-256, or 3DES)."
NOT_PKCS12 = (
    "This is not a PKCS#12 (.p12 or .pfx) file. Export the certificate together with its "
    "private key as .p12 or .pfx."
)
WRONG_UNLOCK_MESSAGE = (
    "The password is not right for this file. Type the password you chose when you "
    "exported the certificate."
)


class Pkcs12Refused(Exception):
    """The file is refused; ``str()`` says why and what to do, safe to show the uploader."""


@dataclass(frozen=True)
class Pkcs12Facts:
    """What the inspection found: private keys and certificates, containers opened."""

    private_keys: int
    certificates: int


@dataclass
class _Walk:
    password: str
    spent: int = 0
    private_keys: int = 0
    certificates: int = 0
    encrypted: list = field(default_factory=list)  # containers to open, counts checked

    def charge(self, iterations: int | None, what: str) -> None:
        iterations = 1 if iterations is None else iterations
        if iterations < 1 or iterations > MAX_ITERATIONS:
            raise Pkcs12Refused(
                f"The file's {what} asks for {iterations:,} key-derivation iterations; "
                f"at most {MAX_ITERATIONS:,} are accepted. {REEXPORT}"
            )
        self.spent += iterations
        if self.spent > MAX_TOTAL_ITERATIONS:
            raise Pkcs12Refused(
                f"The file asks for more than {MAX_TOTAL_ITERATIONS:,} key-derivation "
                f"iterations in all. {REEXPORT}"
            )


def inspect(data: bytes, *, password: str) -> Pkcs12Facts:
    """Check ``data`` is a PKCS#12 file whose key derivations stay within the caps, open
    its encrypted containers with ``password`` and count its private keys and
    certificates. ``Pkcs12Refused`` with the first problem; the counts of every derivation
    are checked before the first one runs."""
    if data.lstrip()[:10] == b"-----BEGIN":
        raise Pkcs12Refused(
            "This is a PEM (text) file, not a PKCS#12 file. Export the certificate "
            "together with its private key as .p12 or .pfx."
        )
    walk = _Walk(password=password)
    try:
        contents = _parse(data, walk)
        for content in contents:
            _plan(content, walk)
        for algorithm, ciphertext in list(walk.encrypted):
            _walk_bags(_open(algorithm, ciphertext, walk), walk, depth=0, sealed=True)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise Pkcs12Refused(NOT_PKCS12) from exc
    return Pkcs12Facts(private_keys=walk.private_keys, certificates=walk.certificates)


def _parse(data: bytes, walk: _Walk) -> list:
    """The authenticated safe's content infos, after the MAC's cost is checked."""
    pfx = pkcs12.Pfx.load(data, strict=True)
    if pfx["version"].native != "v3":
        raise ValueError("not PKCS#12 v3")
    if pfx["auth_safe"]["content_type"].native != "data":
        raise Pkcs12Refused(
            "The file is protected with a public-key signature instead of a password, "
            f"which mdmcerts does not read. {REEXPORT}"
        )
    mac = pfx["mac_data"]
    if mac.native is not None:
        algorithm = mac["mac"]["digest_algorithm"]["algorithm"].native
        if algorithm not in HASHES:
            raise Pkcs12Refused(
                f"The file's integrity check ({algorithm}) is not supported. {REEXPORT}"
            )
        walk.charge(mac["iterations"].native, "integrity check (MAC)")
    return list(pfx.authenticated_safe)


def _plan(content: cms.ContentInfo, walk: _Walk) -> None:
    """Charge what a content info costs; plain ones are walked now, encrypted ones queued."""
    kind = content["content_type"].native
    if kind == "data":
        _walk_bags(content["content"].native, walk, depth=0, sealed=False)
    elif kind == "encrypted_data":
        info = content["content"]["encrypted_content_info"]
        algorithm = info["content_encryption_algorithm"]
        _check_algorithm(algorithm, walk, "certificate encryption")
        walk.encrypted.append((algorithm, info["encrypted_content"].native or b""))
    else:
        raise Pkcs12Refused(
            f"The file is encrypted for a recipient's key ({kind}), not with a password. {REEXPORT}"
        )


def _walk_bags(safe_contents: bytes, walk: _Walk, *, depth: int, sealed: bool) -> None:
    if depth > MAX_NESTING:
        raise ValueError("bags nested too deep")
    for bag in pkcs12.SafeContents.load(safe_contents, strict=True):
        kind = bag["bag_id"].native
        if kind == "key_bag":
            walk.private_keys += 1
        elif kind == "pkcs8_shrouded_key_bag":
            walk.private_keys += 1
            algorithm = bag["bag_value"]["encryption_algorithm"]
            _check_algorithm(algorithm, walk, "private key encryption")
        elif kind == "cert_bag":
            walk.certificates += 1
        elif kind == "safe_contents":
            _walk_bags(bag["bag_value"].dump(), walk, depth=depth + 1, sealed=sealed)


def _check_algorithm(algorithm: algos.EncryptionAlgorithm, walk: _Walk, what: str) -> None:
    name = algorithm["algorithm"].native
    if name == "pbes2":
        kdf = algorithm["parameters"]["key_derivation_func"]
        if kdf["algorithm"].native != "pbkdf2":
            raise Pkcs12Refused(f"The file's {what} uses an unsupported KDF. {REEXPORT}")
        params = kdf["parameters"]
        scheme = algorithm["parameters"]["encryption_scheme"]["algorithm"].native
        if params["prf"]["algorithm"].native not in HASHES or scheme not in PBES2_CIPHERS:
            raise Pkcs12Refused(f"The file's {what} uses an unsupported cipher. {REEXPORT}")
        walk.charge(params["iteration_count"].native, what)
    elif name in PKCS12_PBE:
        walk.charge(algorithm["parameters"]["iterations"].native, what)
    else:
        raise Pkcs12Refused(f"The file's {what} ({name}) is obsolete or unsupported. {REEXPORT}")


# --- opening containers -----------------------------------------------------------------------


def _open(algorithm: algos.EncryptionAlgorithm, ciphertext: bytes, walk: _Walk) -> bytes:
    """The plaintext of an encrypted container (its cost checked already), or the wrong
    password refusal when it does not decrypt."""
    try:
        if algorithm["algorithm"].native == "pbes2":
            plain = _open_pbes2(algorithm, ciphertext, walk.password)
        else:
            plain = _open_pkcs12_pbe(algorithm, ciphertext, walk.password)
        pkcs12.SafeContents.load(plain, strict=True).native  # noqa: B018 (parses it all)
    except ValueError as exc:
        raise Pkcs12Refused(WRONG_UNLOCK_MESSAGE) from exc
    return plain


def _open_pbes2(algorithm: algos.EncryptionAlgorithm, ciphertext: bytes, password: str) -> bytes:
    params = algorithm["parameters"]["key_derivation_func"]["parameters"]
    scheme = algorithm["parameters"]["encryption_scheme"]
    key = PBKDF2HMAC(
        algorithm=HASHES[params["prf"]["algorithm"].native](),
        length=scheme.key_length,
        salt=params["salt"].native,
        iterations=params["iteration_count"].native,
    ).derive(password.encode())
    cipher = PBES2_CIPHERS[scheme["algorithm"].native](key)
    return _cbc_decrypt(cipher, scheme.encryption_iv, ciphertext)


def _open_pkcs12_pbe(
    algorithm: algos.EncryptionAlgorithm, ciphertext: bytes, password: str
) -> bytes:
    key_length, cipher_name = PKCS12_PBE[algorithm["algorithm"].native]
    salt = algorithm["parameters"]["salt"].native
    iterations = algorithm["parameters"]["iterations"].native
    for secret in _bmp(password):
        key = pkcs12_kdf(secret, salt, purpose=1, iterations=iterations, length=key_length)
        iv = pkcs12_kdf(secret, salt, purpose=2, iterations=iterations, length=8)
        try:
            if cipher_name == "rc2":
                plain = rc2_cbc_decrypt(key, iv, ciphertext, effective_bits=key_length * 8)
                return _unpad(plain, 8)
            return _cbc_decrypt(TripleDES(key), iv, ciphertext)
        except ValueError:
            continue
    raise ValueError("does not decrypt")


def _bmp(password: str) -> tuple[bytes, ...]:
    """The password as PKCS#12 KDFs take it: UTF-16BE with a two-byte terminator. An empty
    password is either the terminator alone or nothing at all, as exporters differ."""
    if not password:
        return (b"\0\0", b"")
    return (password.encode("utf-16-be") + b"\0\0",)


def _cbc_decrypt(cipher, iv: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    return _unpad(decryptor.update(ciphertext) + decryptor.finalize(), cipher.block_size // 8)


def _unpad(plain: bytes, block_bytes: int) -> bytes:
    unpadder = padding.PKCS7(block_bytes * 8).unpadder()
    return unpadder.update(plain) + unpadder.finalize()


def pkcs12_kdf(
    password: bytes, salt: bytes, *, purpose: int, iterations: int, length: int
) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (the hash of every PKCS#12 PBE scheme): ``purpose``
    1 derives a key, 2 an IV, 3 a MAC key."""
    digest, u, v = hashlib.sha1, 20, 64
    diversifier = bytes([purpose]) * v
    salt_part = _fill(salt, v)
    password_part = _fill(password, v)
    block_input = bytearray(salt_part + password_part)
    output = b""
    while len(output) < length:
        a = digest(diversifier + bytes(block_input)).digest()
        for _ in range(iterations - 1):
            a = digest(a).digest()
        output += a
        if len(output) < length:
            b = int.from_bytes((a * (v // u + 1))[:v], "big")
            for start in range(0, len(block_input), v):
                chunk = int.from_bytes(block_input[start : start + v], "big")
                block_input[start : start + v] = ((chunk + b + 1) % (1 << (8 * v))).to_bytes(
                    v, "big"
                )
    return output[:length]


def _fill(value: bytes, v: int) -> bytes:
    if not value:
        return b""
    count = -(-len(value) // v) * v
    return (value * (count // len(value) + 1))[:count]


# --- RC2 (RFC 2268), decryption only ------------------------------------------------------

RC2_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
_MASK = 0xFFFF


def _rc2_expand(key: bytes, effective_bits: int) -> list[int]:
    table = bytearray(128)
    table[: len(key)] = key
    for i in range(len(key), 128):
        table[i] = RC2_PITABLE[(table[i - 1] + table[i - len(key)]) & 0xFF]
    t8 = (effective_bits + 7) // 8
    tm = 0xFF % (1 << (8 + effective_bits - 8 * t8))
    table[128 - t8] = RC2_PITABLE[table[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        table[i] = RC2_PITABLE[table[i + 1] ^ table[i + t8]]
    return [table[2 * i] | (table[2 * i + 1] << 8) for i in range(64)]


def _rc2_decrypt_block(k: list[int], block: bytes) -> bytes:
    r = [int.from_bytes(block[i : i + 2], "little") for i in range(0, 8, 2)]
    j = 63

    def unmix() -> None:
        nonlocal j
        for i, shift in ((3, 5), (2, 3), (1, 2), (0, 1)):
            r[i] = ((r[i] >> shift) | (r[i] << (16 - shift))) & _MASK
            mixed = (r[i - 1] & r[i - 2]) + ((~r[i - 1]) & r[i - 3])
            r[i] = (r[i] - k[j] - mixed) & _MASK
            j -= 1

    def unmash() -> None:
        for i in (3, 2, 1, 0):
            r[i] = (r[i] - k[r[i - 1] & 63]) & _MASK

    rounds: list[Callable[[], None]] = [unmix] * 5 + [unmash] + [unmix] * 6 + [unmash]
    for step in [*rounds, *[unmix] * 5]:
        step()
    return b"".join(word.to_bytes(2, "little") for word in r)


def rc2_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes, *, effective_bits: int) -> bytes:
    """RC2-CBC decryption (padding left on) with the key's effective bit length."""
    if not ciphertext or len(ciphertext) % 8:
        raise ValueError("RC2 ciphertext is not whole blocks")
    k = _rc2_expand(key, effective_bits)
    plain, previous = bytearray(), iv
    for start in range(0, len(ciphertext), 8):
        block = ciphertext[start : start + 8]
        decrypted = _rc2_decrypt_block(k, block)
        plain += bytes(x ^ y for x, y in zip(decrypted, previous, strict=True))
        previous = block
    return bytes(plain)
