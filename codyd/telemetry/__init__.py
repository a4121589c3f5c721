"""Pure parsers of agent output: ANSI removal, sentinels, session ids and test summaries."""
