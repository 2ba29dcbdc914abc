"""The one Stripe event router (`relay.stripe_router`), which `/webhooks/stripe` and the
reconciliation share: billing's subscriptions first, then the payments' intents (from
their metadata, else the database), and nothing for intents Relay did not create."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Engine

from relay.payments import repository
from relay.payments.contracts import PaymentView
from relay.stripe_router import stripe_target
from tests.billing.helpers import stripe_event


def test_events_go_to_the_subscription_or_the_payment_they_are_about(engine: Engine) -> None:
    payment_id = str(uuid.uuid4())
    repository.save_view(
        engine,
        PaymentView(id=payment_id, stripe_payment_intent_id="pi_known", amount=100, currency="usd"),
    )

    by_metadata, object_id = stripe_target(
        stripe_event(
            "payment_intent.succeeded",
            {"id": "pi_new", "metadata": {"relayPaymentId": payment_id}},
        ),
        engine,
    )
    assert by_metadata is not None and object_id == "pi_new"
    assert by_metadata.workflow_type == "PaymentWorkflow"
    assert by_metadata.workflow_id == f"payment-{payment_id}"
    assert by_metadata.signal == "stripe_event"
    assert by_metadata.start_arg["stripe_payment_intent_id"] == "pi_new"
    assert by_metadata.search_attributes == {
        "RelayEntityId": payment_id,
        "RelayProvider": "stripe",
    }

    for kind, obj in (
        ("charge.refunded", {"id": "ch_1", "payment_intent": "pi_known"}),
        ("refund.updated", {"id": "re_1", "payment_intent": {"id": "pi_known"}}),
        ("payment_intent.processing", {"id": "pi_known"}),
    ):
        target, object_id = stripe_target(stripe_event(kind, obj), engine)
        assert target is not None and target.workflow_id == f"payment-{payment_id}", kind
        assert object_id == "pi_known"

    subscription, _ = stripe_target(
        stripe_event("customer.subscription.updated", {"id": "sub_1", "status": "active"}),
        engine,
    )
    assert subscription is not None and subscription.workflow_type == "SubscriptionWorkflow"

    # An invoice's intent, one made in the dashboard, a customer: nobody's payment.
    for kind, obj in (
        ("payment_intent.succeeded", {"id": "pi_someone_elses"}),
        ("charge.succeeded", {"id": "ch_2", "payment_intent": "pi_someone_elses"}),
        ("customer.created", {"id": "cus_1"}),
    ):
        target, _ = stripe_target(stripe_event(kind, obj), engine)
        assert target is None, kind
