"""Which provider sends on which channel, in order of preference.

email: SendGrid when it has a key, then SMTP when it has a host (it takes over when
SendGrid fails without acting); sms and whatsapp: Twilio; push: FCM. A channel with no
configured provider is refused by the routes (400 PROVIDER_NOT_CONFIGURED) before
anything is queued. In development with no credentials `relay dev` points each at its
sandbox, so every channel is configured there.
"""

from __future__ import annotations

from relay.notifications.contracts import Channel
from relay.notifications.senders import Sender
from relay.notifications.templates import TemplateStore
from relay.settings import Settings


def configured(settings: Settings, channel: Channel) -> bool:
    from relay.notifications import fcm, sendgrid, smtp, twilio

    if channel is Channel.EMAIL:
        return sendgrid.SendGridSender.configured(settings) or smtp.SmtpSender.configured(settings)
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return twilio.configured(settings, channel)
    return fcm.configured(settings)


class Providers:
    """The worker's senders, built on first use and closed with the worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.templates = TemplateStore(settings.email_templates_dir)
        self._senders: dict[str, Sender] = {}

    def _get(self, name: str) -> Sender:
        sender = self._senders.get(name)
        if sender is None:
            sender = self._build(name)
            self._senders[name] = sender
        return sender

    def _build(self, name: str) -> Sender:
        from relay.notifications import fcm, sendgrid, smtp, twilio

        settings = self._settings
        if name == "sendgrid":
            return sendgrid.SendGridSender.from_settings(settings)
        if name == "smtp":
            return smtp.SmtpSender.from_settings(settings, self.templates)
        if name == "twilio":
            return twilio.TwilioSender.from_settings(settings)
        return fcm.FcmSender.from_settings(settings)

    def for_channel(self, channel: Channel) -> list[Sender]:
        from relay.notifications import fcm, sendgrid, smtp, twilio

        settings = self._settings
        names: list[str] = []
        if channel is Channel.EMAIL:
            if sendgrid.SendGridSender.configured(settings):
                names.append("sendgrid")
            if smtp.SmtpSender.configured(settings):
                names.append("smtp")
        elif channel in (Channel.SMS, Channel.WHATSAPP):
            if twilio.configured(settings, channel):
                names.append("twilio")
        elif fcm.configured(settings):
            names.append("fcm")
        return [self._get(name) for name in names]

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.close()
