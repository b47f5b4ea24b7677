"""querylog: an event-sourced query log for chat and RAG APIs."""

__version__ = "0.2.0.dev0"
