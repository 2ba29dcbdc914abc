"""Inbound provider webhooks: the inbox every provider capability records its events in,
and the forwarding of recorded events to workflows. See docs/inbound.md."""
