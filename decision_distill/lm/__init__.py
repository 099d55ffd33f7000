"""Causal LMs of any role (teacher, small LM, persona base): where weights come from,
loading, the token and verbalized readouts, the answer cache. Knows no scenario."""
