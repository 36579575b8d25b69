"""Vendor fakes for the test suite (aiohttp.web apps answering as the vendor docs say)."""
