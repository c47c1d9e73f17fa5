"""The kopf operator: one module per kind, and the clients it drives."""
