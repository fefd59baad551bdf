"""Fuzzing: hypothesis property tests for the parsers and codecs, header injection through
the real webapi, and an SMTP command fuzzer over real connections to a real daemon.

Hypothesis profiles (registered here, applied per test with ``@FUZZ``, so loading this
package changes no global hypothesis setting):

* ``ci`` (default): derandomized, modest ``max_examples``, no example database, no
  deadline (a shared 2-core machine): the whole package runs in well under 90 s;
* ``long``: ``HYPOTHESIS_PROFILE=long``, random seeds and 20x the examples.

``MOXTW_FUZZ_LONG=1`` makes the SMTP fuzzer run 20,000 sessions instead of 300.  Every
property test counts the examples it ran; ``MOXTW_FUZZ_REPORT=1`` prints the counts
(and the SMTP session count) when the process ends.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Keep hypothesis' caches out of the source tree.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "moxtw-test-hypothesis"))

#: Examples per property test in the ci profile (tests may scale it for expensive ones).
CI_EXAMPLES = 100

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=CI_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    derandomize=False,
    max_examples=CI_EXAMPLES * 20,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

PROFILE = "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "ci"
LONG = PROFILE == "long"
#: The settings every property test in this package uses: ``@FUZZ`` above ``@given``.
FUZZ = settings.get_profile(PROFILE)


def scaled(factor: float) -> settings:
    """The profile's settings with ``max_examples`` scaled (for costly or cheap tests)."""
    return settings(FUZZ, max_examples=max(10, int(FUZZ.max_examples * factor)))


#: Examples run per test (``module.Class.test``), and SMTP fuzz sessions.
COUNTS: Counter[str] = Counter()

F = TypeVar("F", bound=Callable[..., Any])


def counted(f: F) -> F:
    """Count the examples a property test runs (put it below ``@given``)."""
    name = f"{f.__module__.rsplit('.', 1)[-1]}.{f.__qualname__}"

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return f(*args, **kwargs)

    return run  # type: ignore[return-value]


def _report() -> None:
    if COUNTS and os.environ.get("MOXTW_FUZZ_REPORT"):
        print(f"\nfuzz counts (profile {PROFILE}):", file=sys.stderr)
        for name, n in sorted(COUNTS.items()):
            print(f"  {name}: {n}", file=sys.stderr)


atexit.register(_report)
