"""Runs: their state machine, records, supervisor, drivers, turns, output and verdicts."""
