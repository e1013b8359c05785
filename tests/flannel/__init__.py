"""Tests of the flannel agent, its lease stores and backends, on network namespace clusters."""
