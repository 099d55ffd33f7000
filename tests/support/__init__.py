"""Helpers behind the fixtures of tests/conftest.py. Test modules never import this package
(they get what it provides as fixtures); conftest.py does, and so do the benchmarks that train
on the tests' synthetic data (`python -m bench.NAME` from the project root)."""
