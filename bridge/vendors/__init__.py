"""One package per vendor: `api.py` (base URL, auth headers, the shared rate limiter, reply
classification), `sink.py`, `users.py` (directory source), `readback.py` (reconcile) and
`simulator.py` (the fake vendor app for tests and the demo). `registry` names them all; adding a
vendor is one folder and one line there."""
