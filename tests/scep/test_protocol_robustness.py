"""Hostile bytes: every one is refused with MalformedMessage (or ProtocolError), never
another exception, and quickly. Times are printed (run with -s), not asserted."""

import contextlib
import random
import time
from pathlib import Path

import pytest

from apps.scep.protocol import (
    ContentCipher,
    MalformedMessage,
    ProtocolError,
    client,
    envelope,
    server,
)
from tests.scep.test_protocol_server import make_pki, pki_message, scep_attributes, signed_with

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture(scope="module")
def valid_messages(pki) -> list[bytes]:
    built = [
        pki_message(pki, content_cipher=cipher)[0]
        for cipher in ContentCipher
        if cipher is not ContentCipher.DES_CBC
    ]
    return [*built, (TESTDATA / "scepclient_pkcsreq_post.der").read_bytes()]  # fmt: skip


def refuse(pki, der: bytes, *, malformed: bool = True) -> float:
    """Seconds parse_pki_message took to refuse ``der``."""
    expected = MalformedMessage if malformed else ProtocolError
    start = time.perf_counter()
    with pytest.raises(expected):
        server.parse_pki_message(der, ra_certificate=pki.ra, ra_key=pki.ra_key)
    return time.perf_counter() - start


def report(label: str, times: list[float]) -> None:
    print(f"\n{label}: {len(times)} refused, slowest {max(times) * 1000:.2f} ms")


def nested_sequences(depth: int, *, indefinite: bool) -> bytes:
    if indefinite:
        return b"\x30\x80" * depth + b"\x00\x00" * depth
    der = b"\x30\x00"
    for _ in range(depth - 1):
        der = client_free_tlv(der)
    return der


def client_free_tlv(content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return b"\x30" + bytes([length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(octets)]) + octets + content


def test_random_bytes_are_malformed(pki):
    rng = random.Random(8894)
    blobs = [rng.randbytes(rng.randrange(1, 4096)) for _ in range(300)]
    # Random bytes behind a plausible SEQUENCE header reach further into the parsers.
    blobs += [b"\x30\x82" + len(b).to_bytes(2, "big") + b for b in blobs[:150]]

    report("random bytes", [refuse(pki, blob) for blob in blobs])


def test_truncated_messages_are_malformed(pki, valid_messages):
    times = []
    for der in valid_messages:
        for length in [*range(0, 64), *range(64, len(der), 7)]:
            times.append(refuse(pki, der[:length]))

    report("truncated messages", times)


def test_trailing_bytes_are_malformed(pki, valid_messages):
    report("trailing bytes", [refuse(pki, der + b"\x00") for der in valid_messages])


@pytest.mark.parametrize("indefinite", [False, True], ids=["definite", "indefinite"])
def test_a_thousand_nested_sequences_are_malformed(pki, indefinite):
    der = nested_sequences(1000, indefinite=indefinite)

    report(f"1000 nested SEQUENCEs ({'in' if indefinite else ''}definite)", [refuse(pki, der)])


def test_nesting_inside_a_signed_data_is_malformed(pki):
    inner = nested_sequences(1000, indefinite=False)
    der = client_free_tlv(b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02" + b"\xa0" + inner[1:])

    report("nesting inside a SignedData", [refuse(pki, der)])


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1, 1024 * 1024])
def test_a_blob_of_zeros_is_malformed(pki, size):
    report(f"{size} zero bytes", [refuse(pki, bytes(size))])


def test_huge_declared_lengths_are_malformed(pki):
    blobs = [b"\x30\x84\xff\xff\xff\xff", b"\x30\x88" + b"\xff" * 8, b"\x30\x83\x01\x00\x00"]

    report("huge lengths", [refuse(pki, blob) for blob in blobs])


def test_flipped_bytes_parse_or_are_refused_as_protocol_errors(pki, valid_messages):
    # Bytes outside what is signed (the signer certificate's own signature, the outer
    # digestAlgorithms) can change without harm, so some tampered messages still parse.
    rng = random.Random(20)  # reproducible fuzzing, not secrets
    times, parsed = [], 0
    for der in valid_messages[:2]:
        for _ in range(200):
            tampered = bytearray(der)
            for _ in range(rng.randrange(1, 4)):
                tampered[rng.randrange(len(der))] ^= rng.randrange(1, 256)
            start = time.perf_counter()
            try:
                server.parse_pki_message(bytes(tampered), ra_certificate=pki.ra, ra_key=pki.ra_key)
                parsed += 1
            except ProtocolError:
                times.append(time.perf_counter() - start)

    assert parsed < 40
    report(f"flipped bytes ({parsed} still parsed)", times)


def test_the_client_refuses_hostile_cert_reps(pki, valid_messages):
    rng = random.Random(3)
    blobs = [rng.randbytes(rng.randrange(1, 2048)) for _ in range(100)]
    blobs += [der[:cut] for der in valid_messages for cut in range(0, len(der), 97)]
    blobs += [nested_sequences(1000, indefinite=True), bytes(64 * 1024)]

    for blob in blobs:
        with pytest.raises(ProtocolError):
            client.parse_cert_rep(blob, recipient_key=pki.device_key, recipient_certificate=pki.ra)
        with pytest.raises(MalformedMessage):
            client.parse_ca_certs(blob)


def test_get_decoding_refuses_random_text():
    rng = random.Random(5)
    alphabet = "".join(chr(c) for c in range(32, 127)) + "\n\t\u00e9\u2603"
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        with contextlib.suppress(MalformedMessage):
            server.decode_get_message(value)


def test_validly_signed_garbage_is_answered_with_a_protocol_error(pki):
    # Whoever signs with a transient key reaches the envelope and payload parsers.
    rng = random.Random(7)  # reproducible fuzzing, not secrets
    envelope_der = envelope.encrypt(b"payload", pki.ra, ContentCipher.AES_128_CBC)
    contents = [rng.randbytes(rng.randrange(1, 2048)) for _ in range(50)]
    contents += [envelope_der[:cut] for cut in range(1, len(envelope_der), 13)]
    contents += [nested_sequences(1000, indefinite=False), bytes(4096)]
    payloads = [rng.randbytes(rng.randrange(0, 600)) for _ in range(30)]
    payloads += [nested_sequences(1000, indefinite=True), bytes(1000)]
    contents += [
        envelope.encrypt(payload, pki.ra, ContentCipher.AES_256_CBC) for payload in payloads
    ]

    times = []
    for content in contents:
        der = signed_with(pki, content=content, attributes=scep_attributes())
        times.append(refuse(pki, der, malformed=False))
        assert_not_malformed(pki, der)

    report("validly signed garbage", times)


def assert_not_malformed(pki, der: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        server.parse_pki_message(der, ra_certificate=pki.ra, ra_key=pki.ra_key)
    assert not isinstance(caught.value, MalformedMessage)
    assert caught.value.transaction_id == "tx-0001"
