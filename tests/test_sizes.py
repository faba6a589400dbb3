"""Part planning rules, without S3."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oarepo_s3.errors import InvalidUploadRequest
from oarepo_s3.sizes import PartLimits, choose_part_size, expected_part_size, part_count

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
LIMITS = PartLimits()


@pytest.mark.parametrize(
    "size, part_size, count",
    [
        (1, 5 * MiB, 1),
        (5 * MiB, 5 * MiB, 1),
        (5 * MiB + 1, 5 * MiB, 2),
        (15 * MiB, 5 * MiB, 3),
        (15 * MiB + 1, 5 * MiB, 4),
    ],
)
def test_part_count_is_exact_ceiling(size, part_size, count):
    assert part_count(size, part_size) == count  # the original library was off by one here


def test_requested_part_size_is_honoured():
    assert choose_part_size(100 * MiB, 8 * MiB, LIMITS) == 8 * MiB


def test_small_file_is_one_part_of_its_own_size():
    assert choose_part_size(1234, None, LIMITS) == 1234
    assert choose_part_size(1234, 5 * MiB, LIMITS) == 1234


def test_default_grows_to_fit_ten_thousand_parts():
    size = 5 * TiB
    part_size = choose_part_size(size, None, LIMITS)
    assert part_count(size, part_size) <= 10_000
    assert part_size % MiB == 0 and part_size <= 5 * GiB


@pytest.mark.parametrize(
    "part_size, message",
    [
        (5 * MiB - 1, "between"),
        (5 * GiB + 1, "between"),
        (0, "between"),
        (-1, "between"),
        ("8MiB", "integer"),
        (8.0 * MiB, "integer"),
        (True, "integer"),
    ],
)
def test_bad_part_size_names_the_rule(part_size, message):
    with pytest.raises(InvalidUploadRequest, match=message) as e:
        choose_part_size(100 * MiB, part_size, LIMITS)
    assert e.value.field == "part_size"


def test_part_size_giving_too_many_parts():
    with pytest.raises(InvalidUploadRequest, match="10001 parts; at most 10000") as e:
        choose_part_size(10_001 * 5 * MiB, 5 * MiB, LIMITS)
    assert e.value.field == "part_size"


def test_file_too_large_for_any_part_size():
    with pytest.raises(InvalidUploadRequest) as e:
        choose_part_size(10_000 * 5 * GiB + 1, None, LIMITS)
    assert e.value.field == "size"


@settings(max_examples=500, deadline=None)
@given(size=st.integers(1, 48 * TiB), requested=st.none() | st.integers(5 * MiB, 5 * GiB))
def test_plans_respect_s3_limits(size, requested):
    try:
        part_size = choose_part_size(size, requested, LIMITS)
    except InvalidUploadRequest:
        assert requested is not None and part_count(size, requested) > 10_000
        return
    count = part_count(size, part_size)
    assert 1 <= count <= 10_000
    assert part_size <= 5 * GiB
    assert count == 1 or part_size >= 5 * MiB
    if requested is not None:
        assert part_size == min(requested, size)
    last = expected_part_size(count, size, part_size)
    assert 1 <= last <= part_size
    assert (count - 1) * part_size + last == size


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 200 * MiB), part_size=st.integers(5 * MiB, 64 * MiB))
def test_parts_cover_the_file_exactly(size, part_size):
    count = part_count(size, part_size)
    sizes = [expected_part_size(n, size, part_size) for n in range(1, count + 1)]
    assert sum(sizes) == size
    assert all(s == part_size for s in sizes[:-1]) and 1 <= sizes[-1] <= part_size


def test_a_part_below_s3s_minimum_is_fine_when_it_is_the_only_part():
    """S3's 5 MiB minimum binds every part but the last: a small file in one part of its own size is valid."""
    assert choose_part_size(3000, 3000, LIMITS) == 3000
    assert choose_part_size(3000, 4096, LIMITS) == 3000
    with pytest.raises(InvalidUploadRequest, match="between"):
        choose_part_size(3000, 2999, LIMITS)  # two parts, the first below the minimum
