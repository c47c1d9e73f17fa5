"""Code shared by the operator, the API and the sender: settings, database, tiers."""
