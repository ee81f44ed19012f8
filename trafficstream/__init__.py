"""Shared contracts of trafficstream: settings, camera configuration, Kafka message schemas, Delta tables.

Everything that more than one stage of the data flow (ingest -> Kafka -> streaming job -> Delta / results
-> dashboard) must agree on lives here, once.
"""
