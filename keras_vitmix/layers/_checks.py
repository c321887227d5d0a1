"""Argument checks shared by the layers: raise at the boundary, quote what was received."""

import numbers


def check_rate(value, name):
    """Returns `value` as a float after checking it lies in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return float(value)


def check_positive_int(value, name, minimum=1):
    """Returns `value` after checking it is an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
    return int(value)


def to_pair(value, name):
    """Normalizes an int or a pair of ints to a tuple of two positive ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of 2 positive ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)
