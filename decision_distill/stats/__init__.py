"""Array statistics: the faithfulness metrics over probability tables (metrics) and the one
bootstrap interval every report uses (bootstrap). Imports core only."""
