"""configd benchmarks: plain scripts run by ``make bench`` (``python -m bench.run``), not tests.

Every figure is measured beside its raw Consul equivalent in the same run and reported as a ratio.
"""
