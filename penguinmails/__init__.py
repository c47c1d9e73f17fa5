"""PenguinMails: open cold-email infrastructure as a Kubernetes operator."""

__version__ = "0.1.0"
