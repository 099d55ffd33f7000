"""Helpers behind the fixtures of tests/conftest.py. Only conftest.py imports this package:
test modules get what it provides as fixtures."""
