"""The composition root: settings from the environment, `build()` wiring, the `ledger` CLI.

The only package that knows every other one; `ledger/`, `projections/`, `delivery/` and `api/`
receive what they need as arguments and never read the environment themselves.
"""
