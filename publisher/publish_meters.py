"""The Publisher's meters: acknowledged publishes and their latency, what is in flight, the link."""

from __future__ import annotations

from publisher import meters

PUBLISHED = meters.slot("tidings_events_published_total")
IN_FLIGHT = meters.slot("tidings_publishes_in_flight", gauge=True)
CONNECTED = meters.slot("tidings_publisher_connected", gauge=True)
RECONNECTS = meters.slot("tidings_publisher_reconnects_total")
TIMEOUTS = meters.slot("tidings_publish_timeouts_total")
# From a publish written to the router's acknowledgement read: 0.5 ms to 10 s.
ACK_SECONDS = meters.Histogram(
    "tidings_publish_ack_seconds",
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
