"""DNS for SendingDomains: record builders, providers that publish them, and verification."""
