"""`make bench`: tidings against the alternatives and the router's own limit, on this machine."""
