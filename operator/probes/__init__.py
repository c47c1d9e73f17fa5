"""Health probes of an SmtpServer, whatever its provider: SMTP, reverse DNS, blocklists."""
