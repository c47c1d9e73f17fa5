"""Where an SmtpServer's machine comes from: one contract, one module per provider."""
