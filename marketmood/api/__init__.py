"""MarketMood's HTTP API (FastAPI): classify texts, list and acknowledge alerts, collect feedback, health."""

from marketmood.api.app import ApiDependencies, create_app

__all__ = ["ApiDependencies", "create_app"]
