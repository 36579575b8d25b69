"""Moved to bridge.delivery; kept for the store and dispatch modules that still import it here."""

from bridge.delivery import Job, Outcome, Result, Sink

__all__ = ["Job", "Outcome", "Result", "Sink"]
