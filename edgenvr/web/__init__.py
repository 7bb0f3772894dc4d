"""The box's web server: the HTTP API, playback, live view and the UI for site staff (issue 11)."""
