"""Payments: Stripe PaymentIntents as `payment-{id}` workflows (docs/payments.md)."""
