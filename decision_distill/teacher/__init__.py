"""How a language model is asked about scenario states (prompts, readout settings,
answer keys), the generate stage and active sampling."""
