"""DKIM: key generation and storage (`keys`); message signing lives next to it (`signer`)."""
