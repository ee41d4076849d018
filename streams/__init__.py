"""Kafka side of MarketMood: message contract, embedded broker, topics, the stream worker and its sinks, publishers."""
