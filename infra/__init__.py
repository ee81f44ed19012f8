"""Local infrastructure: jars, the local Kafka broker and topic administration, a Spark standalone cluster,
packaging."""
