"""Serving: starting the Flow from settings, and the gateway that adds the web page."""
