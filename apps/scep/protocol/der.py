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
    _scan(bytes(data))


def _scan(data: bytes) -> None:
    """Walk the TLVs iteratively. ``ends`` holds each open constructed value's end (None:
    indefinite) and ``bounds`` the offset no child may pass. One function with local
    names: it runs on every message and every envelope."""
    pos, size = 0, len(data)
    ends: list[int | None] = []
    bounds: list[int] = [size]
    bound = size
    while True:
        # One TLV: tag, length, then open it (constructed) or skip its contents.
        if pos >= bound:
            raise MalformedMessage("the message is truncated")
        first = data[pos]
        pos += 1
        if first & 0x1F == 0x1F:
            for _ in range(4):
                if pos >= bound:
                    raise MalformedMessage("the message is truncated")
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
            else:
                raise MalformedMessage("a tag number is too large")
        if pos >= bound:
            raise MalformedMessage("the message is truncated")
        length = data[pos]
        pos += 1
        if length == 0x80:
            length = None
        elif length > 0x80:
            count = length & 0x7F
            if count > 4:
                raise MalformedMessage("a length is too large")
            if pos + count > bound:
                raise MalformedMessage("the message is truncated")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if first == 0 and length == 0:
            if not ends or ends[-1] is not None:
                raise MalformedMessage("unexpected end-of-contents")
            ends.pop()
            bounds.pop()
            bound = bounds[-1]
        elif length is None or first & 0x20:
            if length is None and not first & 0x20:
                raise MalformedMessage("a primitive value has an indefinite length")
            if len(ends) >= MAX_DEPTH:
                raise MalformedMessage("the message is nested too deeply")
            end = None if length is None else pos + length
            if end is not None and end > bound:
                raise MalformedMessage("a length overruns its container")
            ends.append(end)
            if end is not None:
                bound = end
            bounds.append(bound)
        else:
            if pos + length > bound:
                raise MalformedMessage("a length overruns its container")
            pos += length
        # Close every definite-length value that ends here.
        while ends and ends[-1] is not None and pos == ends[-1]:
            ends.pop()
            bounds.pop()
            bound = bounds[-1]
        if not ends:
            break
    if pos != size:
        raise MalformedMessage("the message has trailing bytes")


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
