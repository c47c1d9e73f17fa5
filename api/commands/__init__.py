"""The `penguinmails` commands that speak the customer API (docs/api.md), thin over the
client in api/client/: `account` (login, logout), `resources` (domains, servers, campaigns),
`admin` (keys, audit). Each module adds its commands with `add_commands(subparsers, common)`."""
