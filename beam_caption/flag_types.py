"""The types of `run`'s flag values: each parses one value or refuses it with a one-line
argparse error (exit 2), so no settings object downstream meets a value it would refuse with a
traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive_int(text: str) -> int:
    """An integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def concurrency(text: str) -> int:
    """'auto' (or 0: sized from measurements) or a positive number of requests."""
    if text.strip().lower() in ("auto", "0"):
        return 0
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text}"
                                         ) from None


def non_negative_int(text: str) -> int:
    """An integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


# Larger values are no setting anyone means (a cap of a quadrillion dollars, a timeout of 30
# million years) and overflow what they are converted to (nano-dollars, a socket timeout).
MAX_NUMBER = 1e15


def non_negative_float(text: str) -> float:
    """A number from 0 to MAX_NUMBER (not NaN, not infinite)."""
    value = float(text)
    if not 0 <= value <= MAX_NUMBER:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_NUMBER:.0e}, "
                                         f"got {text}")
    return value


def rate_limit(text: str) -> float:
    """0 (no limit) or a number from 1 to MAX_NUMBER: a limit below one per minute would pace
    one request over hours (or overflow the buckets' arithmetic)."""
    value = float(text)
    if not (value == 0 or 1 <= value <= MAX_NUMBER):  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or from 1 to {MAX_NUMBER:.0e}, "
                                         f"got {text}")
    return value


def positive_float(text: str) -> float:
    """A number above 0, up to MAX_NUMBER."""
    value = float(text)
    if not 0 < value <= MAX_NUMBER:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a positive number up to {MAX_NUMBER:.0e}, "
                                         f"got {text}")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, else a one-line error."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    parse.__name__ = "integer"  # what argparse names in "invalid integer value"
    return parse


quality = int_between(1, 95)
# Each keyframe is one more image in one request (Anthropic takes at most 100 per request);
# past a few dozen a clip's caption gains nothing and its cost grows with every frame.
video_frames = int_between(1, 32)


def temperature(text: str) -> float:
    """A sampling temperature, 0 to 2."""
    value = float(text)
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {text}")
    return value
