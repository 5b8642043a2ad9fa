"""Types of command-line values (argparse ``type=`` functions): a bad value is one line naming it and what
is valid."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (valid: an integer >= 1)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (valid: an integer >= 1)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (valid: a number > 0)") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (valid: a finite number > 0)")
    return value


def comma_ints(text: str) -> list[int]:
    """A comma list of integers >= 1 (an argparse type)."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return out


def comma_floats(text: str) -> list[float]:
    """A comma list of finite numbers > 0 (an argparse type)."""
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None
    if not out or not all(math.isfinite(x) and x > 0 for x in out):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a finite number > 0")
    return out
