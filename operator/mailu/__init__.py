"""MailU: its configuration rendered from an SmtpServer, installed on a VPS or in the cluster."""
