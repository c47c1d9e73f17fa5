"""One module per resource of the API, each with its `router`."""
