"""The conformance suite as pytest items: one per (implementation, clause), grouped by
clause and citing it in the test ID. Run with `pytest --pyargs bnconf.suite` plus the
bnconf options (see `pytest --help`, group bnconf)."""
