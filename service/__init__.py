"""The chat API: a FastAPI service whose every query step becomes an event."""
