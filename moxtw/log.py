"""Log observers for ``twistd --logger=...``.

``twistd --logger=moxtw.log.json_observer moxtw ...`` writes one JSON object per line
(``twisted.logger``'s event format, fields included) to standard output, which suits
journald and log shippers.  ``twist --log-format=json moxtw ...`` does the same with
Twisted's default ``\\x1e`` record separator.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """One JSON log event per line on standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
