"""Fault drills (``make chaos``): the library and the runner; no pytest tests live here."""
