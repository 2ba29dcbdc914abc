"""Calendar's routes: Google Calendar events and sharing (/v1/calendar/…), Zoom meetings
(/v1/meetings…), and Zoom's webhooks (/webhooks/zoom)."""

from api.routes.calendar import events, meetings, webhooks

routers = (events.router, meetings.router, webhooks.webhooks_router)
