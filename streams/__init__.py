"""Kafka side of MarketMood: message contract, embedded broker, topics, the faust worker, publishers."""
