"""Plain data below the store: run records, states and outcomes, the state directory layout.

Nothing here imports the store, the runs package or anything above them, so the store, the
mirror and codyctl all read the same definitions without an import running back up.
"""
