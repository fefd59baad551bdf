"""A blocking client for the admin API, for the ``moxtw`` command line (standard library
only: a short-lived command needs no reactor)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

#: localserve's HTTP listener.
DEFAULT_URL = "http://localhost:1080/admin/api/"


class AdminClientError(Exception):
    """The call did not succeed; ``str()`` is a message for the user."""


class AdminClient:
    def __init__(self, url: str, password: str, *, timeout: float = 120.0) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.password = password
        self.timeout = timeout
        # The admin API is normally on this machine: do not send it through a proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with ``params``; its result, or :class:`AdminClientError`."""
        body = json.dumps({"params": list(params)}).encode("utf-8")
        credentials = base64.b64encode(b"admin:" + self.password.encode("utf-8")).decode("ascii")
        request = urllib.request.Request(
            self.url + method,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Basic " + credentials},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        except urllib.error.URLError as e:
            raise AdminClientError(
                f"cannot reach the moxtw admin API at {self.url}: {_reason(e.reason)}"
                " (is moxtw running? the address is set with --admin-url)"
            ) from None
        except TimeoutError:
            raise AdminClientError(f"no answer from the moxtw admin API at {self.url} within {self.timeout:g}s") from None
        except OSError as e:
            raise AdminClientError(f"talking to the moxtw admin API at {self.url}: {_reason(e)}") from None
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message", "") if isinstance(error, dict) else ""
        if status == 401:
            raise AdminClientError(
                f"admin authentication failed at {self.url}: {message or 'wrong password'}"
                " (give the admin password with --admin-password or $MOXTW_ADMIN_PASSWORD)"
            )
        if status == 404 and error is None:
            raise AdminClientError(f"no moxtw admin API at {self.url} (HTTP 404; check --admin-url)")
        if error is not None:
            raise AdminClientError(message or f"{method} failed (HTTP {status})")
        if status != 200 or not isinstance(answer, dict) or "result" not in answer:
            text = data[:200].decode("utf-8", "replace").strip()
            raise AdminClientError(f"unexpected answer from {self.url}{method} (HTTP {status}): {text}")
        return answer["result"]


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
