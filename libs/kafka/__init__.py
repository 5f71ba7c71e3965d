"""Kafka code shared by ``kafkareader`` and ``kafkawriter``: settings, the driver, JSON encoding."""
