"""Notifications tests: against the sandboxes in relay/sandbox/ and the real Temporal servers."""
