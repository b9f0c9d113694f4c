"""tidings: real-time notifications from domain events to browsers over WAMP."""
