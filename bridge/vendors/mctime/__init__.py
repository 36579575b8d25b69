"""mctime: see bridge/vendors/__init__.py for what each module holds."""
