"""Test data shipped with AMORE: realistic European XFEL runs written with extra-data's mock-data
machinery (used by the demo, the tests and the benchmarks)."""
