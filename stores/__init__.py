"""State kept beyond one call: used ticket ids and maintenance mode, in memory, a file or Redis."""
