"""Delivery targets: one module per vendor, all behind the Sink protocol in base.py."""
