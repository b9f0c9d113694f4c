"""Helpers for the tests: real routers, workers, brokers and WAMP clients."""
