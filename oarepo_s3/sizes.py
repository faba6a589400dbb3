"""Part planning: pure functions that turn a file size into S3 multipart parts.

Kept free of Flask and S3 so the rules (S3's 5 MiB..5 GiB parts, at most
10,000 of them) can be unit-tested exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidUploadRequest

MiB = 1024**2


@dataclass(frozen=True, slots=True)
class PartLimits:
    """The bounds a part plan must respect (from config, or S3's defaults)."""

    min_part_size: int = 5 * MiB
    max_part_size: int = 5 * 1024**3
    max_parts: int = 10_000
    default_part_size: int = 16 * MiB


def part_count(size: int, part_size: int) -> int:
    """Number of parts of ``part_size`` needed for ``size`` bytes (ceil, at least 1)."""
    return max(1, -(-size // part_size))


def choose_part_size(size: int, requested: int | None, limits: PartLimits) -> int:
    """Return the part size for a file of ``size`` bytes.

    A valid ``requested`` size is honoured (below S3's minimum only when the
    file fits in that one part); otherwise the default is grown in
    whole MiB until the file fits in ``limits.max_parts`` parts. The result is
    never larger than the file itself, so a small file is one part.

    :raises InvalidUploadRequest: ``part_size`` is out of range or needs too many parts.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int):
            raise InvalidUploadRequest("part_size", "must be an integer number of bytes")
        # S3's minimum binds every part but the last: a file in one part may have any size.
        one_part = 1 <= size <= requested
        if requested < 1 or requested > limits.max_part_size or (requested < limits.min_part_size and not one_part):
            raise InvalidUploadRequest(
                "part_size",
                f"must be between {limits.min_part_size} and {limits.max_part_size} bytes "
                "(or at least the file's size: one part)",
            )
        if part_count(size, requested) > limits.max_parts:
            raise InvalidUploadRequest(
                "part_size",
                f"gives {part_count(size, requested)} parts; at most {limits.max_parts} are allowed, "
                f"so it must be at least {-(-size // limits.max_parts)} bytes",
            )
        return min(requested, size)
    needed = -(-size // limits.max_parts)
    part_size = max(limits.default_part_size, -(-needed // MiB) * MiB)
    if part_size > limits.max_part_size:
        raise InvalidUploadRequest(
            "size",
            f"needs parts larger than {limits.max_part_size} bytes "
            f"(at most {limits.max_parts} parts are allowed)",
        )
    return min(part_size, size)


def expected_part_size(number: int, size: int, part_size: int) -> int:
    """Length S3 must hold for part ``number`` (1-based) of a ``size``-byte file."""
    return min(part_size, size - (number - 1) * part_size)
