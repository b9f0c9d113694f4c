"""Free TCP ports on loopback and waiting for a port to answer (shared with the bench)."""

from tidings.procs import free_port, port_open, wait_port

__all__ = ["free_port", "port_open", "wait_port"]
