"""What a packet holds before python-osc parses it.

python-osc skips a type tag it cannot read with one ``logging.warning`` on the *root* logger
per tag, outside any rate limit of ours: a flood of 60 kB datagrams of unknown tags became a
flood of log lines (194 kB from 2000 packets). The daemon asks here first and drops such a
packet itself, counted and rate-limited like any other bad packet.
"""

from __future__ import annotations

BUNDLE = b"#bundle\0"
READABLE_TAGS = frozenset("ihfdsbrmtTFN[]")  # what pythonosc.osc_message parses
MAX_BUNDLE_DEPTH = 32  # deeper nesting is left to the parser (and its own errors)


def _after_string(dgram: bytes, start: int) -> int:
    """Index just past the NUL-padded OSC string at ``start``; -1 when it never ends."""
    end = dgram.find(b"\0", start)
    return -1 if end < 0 else start + ((end - start) // 4 + 1) * 4


def unreadable_tags(dgram: bytes, _depth: int = 0) -> str:
    """The type tags in ``dgram`` (a message, or every message of a bundle) python-osc cannot
    read, sorted and once each; "" when there are none (or nothing to tell: a packet that is
    not OSC at all is the parser's to refuse)."""
    if dgram.startswith(BUNDLE):
        if _depth >= MAX_BUNDLE_DEPTH:
            return ""
        found: set[str] = set()
        index = len(BUNDLE) + 8  # the time tag
        while index + 4 <= len(dgram):
            size = int.from_bytes(dgram[index : index + 4], "big", signed=True)
            index += 4
            if size <= 0:
                break
            found.update(unreadable_tags(dgram[index : index + size], _depth + 1))
            index += size
        return "".join(sorted(found))
    tags_at = _after_string(dgram, 0)
    if tags_at < 0 or dgram[tags_at : tags_at + 1] != b",":
        return ""
    end = dgram.find(b"\0", tags_at)
    tags = dgram[tags_at + 1 : len(dgram) if end < 0 else end]
    return "".join(sorted({chr(tag) for tag in tags} - READABLE_TAGS))
