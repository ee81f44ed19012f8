"""Local infrastructure: Maven-resolved jars (infra.jars) and a single-node Kafka broker (infra.kafka)."""
