"""POST JSON to a webhook with a timeout and retries (standard library only).

A 2xx answer is success. Network errors, timeouts, 429 and 5xx answers are retried with
exponential back-off; any other 4xx is final (the payload or the URL is wrong, retrying will not
help). The caller decides what a final failure means; for alerts it means "try again next run".
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable


class WebhookError(RuntimeError):
    """The webhook did not accept the payload after every attempt."""


def post_json(url: str, payload: dict, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """POST ``payload`` as JSON; return the HTTP status, or raise :class:`WebhookError`."""
    body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    attempts = max(1, retries)
    last = ""
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "User-Agent": "cxloop-alerts"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from the operator
                return resp.status
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code != 429 and e.code < 500:
                break
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            last = str(getattr(e, "reason", e)) or type(e).__name__
        if attempt + 1 < attempts:
            sleep(backoff * 2 ** attempt)
    raise WebhookError(f"webhook {url} failed after {attempt + 1} attempt(s): {last}")
