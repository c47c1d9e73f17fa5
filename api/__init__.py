"""The customer-facing API and the resource models."""
