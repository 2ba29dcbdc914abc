"""When a token is due for refresh: shared by the workflow (its timer and its re-check
under the lock) and the credentials route (whether to ask the workflow at all)."""

from __future__ import annotations

from datetime import datetime, timedelta

# A provider issuing very short-lived tokens must not make Relay refresh in a loop.
MIN_LEAD = timedelta(seconds=1)


def refresh_due_at(
    expires_at: datetime, issued_at: datetime | None, buffer_seconds: int
) -> datetime:
    """`expires_at` minus the catalog's buffer, but never more than half the token's life
    (a 60-second token with a 300-second buffer is refreshed after 30 seconds, not at once).
    """
    lead = timedelta(seconds=buffer_seconds)
    if issued_at is not None and expires_at > issued_at:
        lead = min(lead, max((expires_at - issued_at) / 2, MIN_LEAD))
    return expires_at - lead
