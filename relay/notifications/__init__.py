"""Notifications: email, SMS, WhatsApp, push and verification codes (docs/notifications.md)."""
