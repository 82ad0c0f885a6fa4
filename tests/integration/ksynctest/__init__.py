"""Helpers for ksync's integration tests: DAV servers, test data, and the ksyncd harness."""
