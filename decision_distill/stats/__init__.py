"""Array statistics over probability tables: the faithfulness metrics. Imports core only."""
