"""When to retry and how long to wait: exponential backoff with jitter, honoring Retry-After."""

from __future__ import annotations

import random
from collections.abc import Mapping

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
# A server asking for longer than this is not waited for inside a single call.
MAX_RETRY_AFTER = 60.0


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        import email.utils
        import time

        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, float(parsed.timestamp()) - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based). Retry-After wins when the server sent it."""
    if retry_after is not None and 0 <= retry_after <= MAX_RETRY_AFTER:
        return retry_after
    delay = min(MAX_DELAY, INITIAL_DELAY * (2.0 ** attempt))
    # "Full jitter" keeps many clients that failed together from retrying together.
    return delay * (0.5 + random.random() / 2)
