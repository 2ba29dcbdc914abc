"""Payments' routes: payments (Stripe PaymentIntents, PayPal orders, PayPal's webhook)
and one-off Stripe invoices."""

from api.routes.payments import invoices, payments

routers = (payments.router, invoices.router, payments.webhooks_router)
