"""The dataset contract and where states come from: schema, scenarios and their states, splits, imported decisions."""
