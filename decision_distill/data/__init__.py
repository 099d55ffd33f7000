"""The dataset contract and where states come from: the schema, scenarios and their
states, splits, imported decisions."""
