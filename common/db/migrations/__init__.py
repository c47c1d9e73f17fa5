"""The ordered SQL migrations (`NNNN_name.sql`), shipped as package data; see docs/database.md."""
