"""Typed descriptions of damage: what was found where, in samples and seconds.

Every span is half-open, ``[start, end)``, in absolute frames of the source file
(frame 0 is the first sample of the file, not of the region), so spans from
different reads of the same file can be compared and merged directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class DamageKind(StrEnum):
    """The kinds of damage the detector reports."""

    DROPOUT = "dropout"  # a run of exact or near digital silence inside signal
    LEVEL_DROP = "level_drop"  # the level falls abruptly by tens of dB, then comes back
    CLICK = "click"  # an impulsive disturbance or a discontinuity of a few samples
    CLIP = "clip"  # a run of samples held at the clipping level
    MARKED = "marked"  # a span the user marked by hand; never produced by the detector


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """One damaged stretch of one channel."""

    start: int
    end: int
    channel: int
    kind: DamageKind
    confidence: float  # 0..1: how sure the detector is that this is damage
    # Why it may not be damage after all ("" = unambiguous): auto-repair leaves it alone.
    doubt: str = field(default="", compare=False)
    # What speaks most against it, should its confidence fall below a sensitivity's bar.
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty span [{self.start}, {self.end})")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} outside [0, 1]")

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self, sample_rate: int) -> dict:
        return {
            "channel": self.channel,
            "kind": str(self.kind),
            "start": self.start,
            "end": self.end,
            "start_s": self.start / sample_rate,
            "end_s": self.end / sample_rate,
            "duration_ms": 1000.0 * self.length / sample_rate,
            "confidence": round(self.confidence, 4),
            **({"doubt": self.doubt} if self.doubt else {}),
        }


@dataclass(slots=True)
class DamageReport:
    """What a scan of ``[start, end)`` of one file found."""

    sample_rate: int
    num_channels: int
    start: int
    end: int
    spans: list[Span] = field(default_factory=list)
    source: str | None = None
    # Found but doubtful at the scan's sensitivity: reported, never repaired automatically
    # (each with its ``doubt``). Empty when the scan did not sort its findings.
    left_alone: list[Span] = field(default_factory=list)

    def by_kind(self) -> dict[str, int]:
        counts = {str(kind): 0 for kind in DamageKind}
        for span in self.spans:
            counts[str(span.kind)] += 1
        return counts

    def to_dict(self) -> dict:
        header = asdict(self)
        header.pop("spans")
        header.pop("left_alone")
        header["start_s"] = self.start / self.sample_rate
        header["end_s"] = self.end / self.sample_rate
        header["counts"] = self.by_kind()
        header["spans"] = [span.to_dict(self.sample_rate) for span in self.spans]
        header["left_alone"] = [span.to_dict(self.sample_rate) for span in self.left_alone]
        return header
