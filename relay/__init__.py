"""Relay: durable third-party integrations on Temporal."""

__version__ = "0.1.0"
