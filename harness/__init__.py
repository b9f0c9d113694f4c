"""What the tests and the bench share (not shipped): real processes, ports, vhosts, clients."""
