"""The verification workflow: `verification-{id}`, one per destination (the id is a keyed
hash of it), the single writer of that destination's codes and limits.

- Started by update-with-start of `send`; a later `send` while it runs re-sends the live
  code (a late first message still works, as with Twilio Verify) or, when none is live,
  makes a new one. Every send queues a message through `send_code`; the workflow keeps
  the current code's digest only, never the code, nor the destination.
- A code expires CODE_TTL_SECONDS after its latest send and takes MAX_CHECKS checks: the
  next one is refused (TOO_MANY_ATTEMPTS) even with the right code. The right code is
  spent (VERIFIED). MAX_SENDS sends within SEND_WINDOW; the next is TOO_MANY_ATTEMPTS.
- `check` takes the digest the API made of the submitted code and compares it in
  constant time.
- Ends when nothing is live (no unexpired code, no send within SEND_WINDOW), so a later
  send starts a new run; continues-as-new when Temporal suggests it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notifications_verification import VerificationActivities
    from relay.errors import ErrorCode
    from relay.notifications.contracts import (
        CODE_TTL_SECONDS,
        MAX_CHECKS,
        MAX_SENDS,
        VerificationStatus,
    )
    from relay.notifications.verification import (
        CheckCodeRequest,
        CheckResult,
        SendCodeInput,
        SendCodeRequest,
        VerificationInput,
        VerificationState,
        VerificationView,
        digests_match,
    )

VERIFICATION_WORKFLOW = "VerificationWorkflow"
CODE_TTL = timedelta(seconds=CODE_TTL_SECONDS)
SEND_WINDOW = timedelta(minutes=10)
# Queueing is one database write: a few quick retries, well inside the API's wait for the
# update (workflows.clients.UPDATE_WAIT); past them the send fails and does not count.
SEND_TIMEOUT = timedelta(seconds=10)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=4),
    maximum_attempts=5,
)


@workflow.defn(name=VERIFICATION_WORKFLOW)
class VerificationWorkflow:
    """One destination's verification codes: sends and checks, with Twilio Verify's limits."""

    @workflow.init
    def __init__(self, params: VerificationInput) -> None:
        self._state = params.state or VerificationState(verification_id=params.verification_id)
        self._lock = asyncio.Lock()
        self._changed = False

    # --- the loop ------------------------------------------------------------------------

    def _expire(self, now: datetime) -> None:
        state = self._state
        if (
            state.status == VerificationStatus.PENDING
            and state.expires_at is not None
            and state.expires_at <= now
        ):
            state.status = VerificationStatus.EXPIRED.value
            state.digest = None

    def _recent_sends(self, now: datetime) -> list[datetime]:
        return [sent for sent in self._state.send_times if sent > now - SEND_WINDOW]

    def _live_until(self) -> datetime | None:
        """When nothing will be live any more: the code expired and the send window empty."""
        state = self._state
        moments = [sent + SEND_WINDOW for sent in state.send_times]
        if state.status == VerificationStatus.PENDING and state.expires_at is not None:
            moments.append(state.expires_at)
        return max(moments) if moments else None

    def _ended(self) -> bool:
        until = self._live_until()
        return until is None or until <= workflow.now()

    @workflow.run
    async def run(self, params: VerificationInput) -> VerificationView:
        if self._state.seed is None:
            # Codes are derived from it: stable across continue-as-new, new for a new run.
            self._state.seed = workflow.info().first_execution_run_id
        while True:
            self._expire(workflow.now())
            if self._ended():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._expire(workflow.now())
                if self._ended():
                    return self._view()
                continue
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._state.send_times = self._recent_sends(workflow.now())
                workflow.continue_as_new(
                    VerificationInput(params.verification_id, state=self._state)
                )
            until = self._live_until()
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._changed or workflow.info().is_continue_as_new_suggested(),
                    timeout=until - workflow.now() if until is not None else None,
                )
            except TimeoutError:
                pass  # the top of the loop expires the code and ends the run if idle

    # --- sends ---------------------------------------------------------------------------

    def _refuse_send(self, now: datetime) -> None:
        recent = self._recent_sends(now)
        if len(recent) >= MAX_SENDS:
            retry_after = (min(recent) + SEND_WINDOW - now).total_seconds()
            raise ApplicationError(
                f"{MAX_SENDS} codes were sent to this destination in the last "
                f"{int(SEND_WINDOW.total_seconds() // 60)} minutes; try again later",
                {"retryAfterSeconds": max(1, int(retry_after + 0.999))},
                type=ErrorCode.TOO_MANY_ATTEMPTS.value,
                non_retryable=True,
            )

    @workflow.update
    async def send(self, request: SendCodeRequest) -> VerificationView:
        async with self._lock:
            now = workflow.now()
            self._expire(now)
            self._refuse_send(now)
            state = self._state
            # The slot is taken before the activity, so concurrent sends cannot exceed it.
            state.send_times = [*self._recent_sends(now), now]
            state.send_number += 1
            new_code = state.status != VerificationStatus.PENDING
            code_number = state.code_number + 1 if new_code else state.code_number
            try:
                sent = await workflow.execute_activity_method(
                    VerificationActivities.send_code,
                    SendCodeInput(
                        verification_id=state.verification_id,
                        channel=request.channel,
                        seed=state.seed or workflow.info().first_execution_run_id,
                        code_number=code_number,
                        send_number=state.send_number,
                    ),
                    start_to_close_timeout=SEND_TIMEOUT,
                    retry_policy=SEND_RETRY,
                )
            except ActivityError:
                # Nothing was queued: the send does not count against the limit.
                state.send_times = [sent_at for sent_at in state.send_times if sent_at != now]
                raise ApplicationError(
                    "the code could not be queued; try again",
                    {"retryable": True},
                    type=ErrorCode.INTERNAL_ERROR.value,
                ) from None
            if new_code:
                state.code_number = code_number
                state.digest = sent.digest
                state.checks_used = 0
                state.status = VerificationStatus.PENDING.value
            state.channel = request.channel
            state.expires_at = workflow.now() + CODE_TTL
            state.notification_id = sent.notification_id
            self._changed = True
            return self._view(new_code=new_code)

    @send.validator
    def _validate_send(self, request: SendCodeRequest) -> None:
        self._refuse_send(workflow.now())

    # --- checks --------------------------------------------------------------------------

    def _refuse_check(self) -> None:
        # A code's fifth wrong check exhausts it: nothing opens it again but a new send.
        if self._state.status == VerificationStatus.EXHAUSTED:
            raise ApplicationError(
                f"this code was checked {MAX_CHECKS} times; send a new one",
                {"maxChecks": MAX_CHECKS},
                type=ErrorCode.TOO_MANY_ATTEMPTS.value,
                non_retryable=True,
            )

    @workflow.update
    def check(self, request: CheckCodeRequest) -> CheckResult:
        self._expire(workflow.now())
        self._refuse_check()
        state = self._state
        if state.status != VerificationStatus.PENDING or state.digest is None:
            return CheckResult(valid=False, status=state.status, checks_left=0)
        state.checks_used += 1
        valid = digests_match(state.digest, request.digest)
        if valid:
            state.status = VerificationStatus.VERIFIED.value  # the code is spent
            state.digest = None
        elif state.checks_used >= MAX_CHECKS:
            state.status = VerificationStatus.EXHAUSTED.value
            state.digest = None
        self._changed = True
        return CheckResult(valid=valid, status=state.status, checks_left=self._checks_left())

    @check.validator
    def _validate_check(self, request: CheckCodeRequest) -> None:
        self._refuse_check()

    # --- reads ---------------------------------------------------------------------------

    def _checks_left(self) -> int:
        if self._state.status != VerificationStatus.PENDING:
            return 0
        return max(0, MAX_CHECKS - self._state.checks_used)

    def _view(self, *, new_code: bool = False) -> VerificationView:
        state = self._state
        return VerificationView(
            verification_id=state.verification_id,
            status=state.status,
            channel=state.channel,
            expires_at=state.expires_at,
            sends_left=max(0, MAX_SENDS - len(self._recent_sends(workflow.now()))),
            checks_left=self._checks_left(),
            new_code=new_code,
            notification_id=state.notification_id,
        )

    @workflow.query
    def state(self) -> VerificationView:
        return dataclasses.replace(self._view(), new_code=False)


WORKFLOWS = (VerificationWorkflow,)
