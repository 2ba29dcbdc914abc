"""Payments fixtures: billing's (localstripe on a free port, an API and a worker whose
Stripe is that localstripe and whose webhook secrets sign the tests' events), reused."""

from __future__ import annotations

from tests.billing.conftest import billing_stack, localstripe, stripe

__all__ = ["billing_stack", "localstripe", "stripe"]
