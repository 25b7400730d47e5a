"""Microsoft 365 credentials for BotCity bots."""

__version__ = "1.0.0"
