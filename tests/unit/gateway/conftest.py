"""Fixtures of the gateway tests. Its folder is where ``gateway_fast`` (the fast test layer) is imported from."""
