"""Calendar and meetings: Google Calendar events, Zoom meetings, and a scheduled meeting as
one workflow (docs/calendar.md)."""
