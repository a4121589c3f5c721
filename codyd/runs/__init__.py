"""Runs: their state machine, records, supervisor and turns."""
