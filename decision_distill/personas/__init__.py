"""The persona half: one small-LM agent per person, built from what that person said."""
