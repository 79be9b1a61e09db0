"""A bounded scan of BER/DER before any parser sees it, and a few encoding helpers.

asn1crypto parses lazily and recursively; hostile input (deep nesting, lengths that
overrun their parent, megabytes of zeros) must be refused before it gets there, in time
linear in the input and without recursion.
"""

from apps.scep.protocol.constants import MAX_MESSAGE_SIZE
from apps.scep.protocol.errors import MalformedMessage

# Real pkiMessages nest about 12 levels (certificates inside SignedData); octet strings
# that wrap further structures are scanned separately when they are opened.
MAX_DEPTH = 32


def check_der(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> None:
    """Raise ``MalformedMessage`` unless ``data`` is exactly one well-formed TLV.

    Accepts BER indefinite lengths (some clients send them) but refuses lengths that
    overrun their parent, trailing bytes, nesting deeper than ``MAX_DEPTH``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage("the message is not bytes")
    if not data:
        raise MalformedMessage("the message is empty")
    if len(data) > max_size:
        raise MalformedMessage("the message is too large")
    _Scanner(bytes(data)).run()


class _Scanner:
    """Walks TLVs iteratively; ``ends`` holds each open constructed value's end (None:
    indefinite) and ``bounds`` the offset no child may pass."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.ends: list[int | None] = []
        self.bounds: list[int] = [len(data)]

    def run(self) -> None:
        self.step()
        while self.ends:
            if self.ends[-1] is not None and self.pos == self.ends[-1]:
                self.close()
                continue
            self.step()
        if self.pos != len(self.data):
            raise MalformedMessage("the message has trailing bytes")

    def close(self) -> None:
        self.ends.pop()
        self.bounds.pop()

    def step(self) -> None:
        first = self.byte()
        if first & 0x1F == 0x1F:
            self.skip_long_tag()
        length = self.length()
        if first == 0 and length == 0:
            self.end_of_contents()
        elif length is None:
            if not first & 0x20:
                raise MalformedMessage("a primitive value has an indefinite length")
            self.open(None)
        elif first & 0x20:
            self.open(self.pos + length)
        else:
            self.advance(length)

    def end_of_contents(self) -> None:
        if not self.ends or self.ends[-1] is not None:
            raise MalformedMessage("unexpected end-of-contents")
        self.close()

    def open(self, end: int | None) -> None:
        if len(self.ends) >= MAX_DEPTH:
            raise MalformedMessage("the message is nested too deeply")
        if end is not None and end > self.bounds[-1]:
            raise MalformedMessage("a length overruns its container")
        self.ends.append(end)
        self.bounds.append(self.bounds[-1] if end is None else end)

    def advance(self, length: int) -> None:
        if self.pos + length > self.bounds[-1]:
            raise MalformedMessage("a length overruns its container")
        self.pos += length

    def byte(self) -> int:
        if self.pos >= self.bounds[-1]:
            raise MalformedMessage("the message is truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def skip_long_tag(self) -> None:
        for _ in range(4):
            if not self.byte() & 0x80:
                return
        raise MalformedMessage("a tag number is too large")

    def length(self) -> int | None:
        first = self.byte()
        if first < 0x80:
            return first
        if first == 0x80:
            return None
        count = first & 0x7F
        if count > 4:
            raise MalformedMessage("a length is too large")
        value = 0
        for _ in range(count):
            value = value << 8 | self.byte()
        return value


def encode_length(length: int) -> bytes:
    """The DER length octets for ``length``."""
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def encode_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a single-octet ``tag``."""
    return bytes([tag]) + encode_length(len(content)) + content


def der_set_of(elements: list[bytes]) -> bytes:
    """A DER SET OF: its encoded elements in ascending order (X.690 11.6)."""
    return encode_tlv(0x31, b"".join(sorted(elements)))
