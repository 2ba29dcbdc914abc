"""Billing: Stripe subscriptions as entity workflows fed by verified Stripe webhooks.
See docs/billing.md."""
