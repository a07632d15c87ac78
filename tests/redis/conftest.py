"""The Redis backend tests use the private-server fixtures of tests/conftest.py."""
