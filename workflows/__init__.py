"""Workflows only orchestrate: no I/O, no wall clock, no randomness."""
