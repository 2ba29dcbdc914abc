"""Outgoing webhooks: signing, the SSRF guard, event patterns, publishing and the outbox.

See docs/webhooks.md for the design and its guarantees.
"""
