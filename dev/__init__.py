"""The local stack: a real control plane, PostgreSQL and Redis, started on loopback."""
