"""A multi-channel notification (`notification-{id}`): one channel after another until one
delivers.

For each channel in order, the workflow queues that channel's message (the send pump
sends it) and waits for it to settle: a final status, or SENT where the provider never
reports delivery (SMTP, FCM). It hears that from a `channel_outcome` signal; if none comes
within NOTIFICATION_FALLBACK_AFTER it reads the status itself. Delivered (or settled as
sent) ends the notification with that channel; failed, bounced, undelivered or still
undelivered at the deadline moves on to the next channel. When every channel failed, the
notification is FAILED. Nothing personal is in its history: the content stays sealed in
the database, and the workflow carries ids.

The capability's other workflows register here too: the send pump's dispatcher
(workflows/notifications_dispatch.py) and verification codes
(workflows/notifications_verification.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from relay.notifications.contracts import (
        CHANNEL_OUTCOME_SIGNAL,
        ChannelOutcome,
        EnqueueChannelInput,
        EnqueueChannelResult,
        FinishNotificationInput,
        MessageSettlement,
        NotificationInput,
        NotificationState,
        NotificationStatus,
    )
    from workflows.notifications_dispatch import NotificationDispatchWorkflow
    from workflows.notifications_verification import VerificationWorkflow

STEP_TIMEOUT = timedelta(minutes=1)
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn
class NotificationWorkflow:
    @workflow.init
    def __init__(self, params: NotificationInput) -> None:
        self._outcomes: dict[str, str] = {}
        self._state = NotificationState(notification_id=params.notification_id)

    @workflow.run
    async def run(self, params: NotificationInput) -> NotificationState:
        last_error: str | None = None
        for step, channel in enumerate(params.channels):
            self._state.step = step
            self._state.channel = channel
            queued: EnqueueChannelResult = await workflow.execute_activity_method(
                NotificationActivities.enqueue_channel,
                EnqueueChannelInput(params.notification_id, channel, step),
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            if queued.message_id is None:
                last_error = queued.error_code
                continue
            self._state.message_id = queued.message_id
            status = await self._settled(queued.message_id, params.fallback_after_seconds)
            if status in (NotificationStatus.DELIVERED.value, NotificationStatus.SENT.value):
                return await self._finish(status, channel, queued.message_id, None)
            last_error = f"{channel.upper()}_{status}"
        return await self._finish(NotificationStatus.FAILED.value, None, None, last_error)

    async def _settled(self, message_id: str, wait_seconds: float) -> str:
        """The message's status once it settles, or at the deadline (still SENT/PENDING on
        a channel that confirms delivery counts as not delivered: fall back)."""
        try:
            await workflow.wait_condition(
                lambda: message_id in self._outcomes, timeout=timedelta(seconds=wait_seconds)
            )
            return self._outcomes[message_id]
        except TimeoutError:
            pass
        read: MessageSettlement = await workflow.execute_activity_method(
            NotificationActivities.message_status,
            message_id,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        # Not delivered in time (still queued, or sent and never confirmed): fall back.
        return read.status if read.settled else NotificationStatus.UNDELIVERED.value

    async def _finish(
        self, status: str, channel: str | None, message_id: str | None, error: str | None
    ) -> NotificationState:
        await workflow.execute_activity_method(
            NotificationActivities.finish_notification,
            FinishNotificationInput(
                self._state.notification_id, status, channel, message_id, error
            ),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        self._state.status = status
        return self._state

    @workflow.signal(name=CHANNEL_OUTCOME_SIGNAL)
    def channel_outcome(self, outcome: ChannelOutcome) -> None:
        self._outcomes[outcome.message_id] = outcome.status

    @workflow.query
    def state(self) -> NotificationState:
        return self._state


WORKFLOWS = (NotificationWorkflow, NotificationDispatchWorkflow, VerificationWorkflow)
