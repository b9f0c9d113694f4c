"""Send one raw event to tidings from Python with kombu: confirmed, mandatory, persistent.

    TIDINGS_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// python docs/examples/python/raw_event.py

Prints `published <type> event_id=<id>` once the broker has the message in a
queue. Exits 1 with one line on stderr if the broker returns it (no queue is
bound: run `tidings setup`) or refuses it. An event given as JSON in the first
argument is sent instead; one without `event_id` gets a new one, so a resend of
the same JSON with the printed `event_id` is dropped by browsers as a duplicate.
"""

import json
import os
import sys
import uuid
from datetime import UTC, datetime

from amqp.exceptions import MessageNacked
from kombu import Connection, Exchange
from kombu.exceptions import OperationalError

BROKER = os.environ.get("TIDINGS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
EVENTS = Exchange("tidings.events", type="topic", durable=True)  # `tidings setup` declares it


def send(event: dict) -> str | None:
    """Publish `event`; None once the broker has it in a queue, else why not."""
    returned = []

    def on_return(exc, exchange, routing_key, message):  # the broker's basic.return
        returned.append(f"{exc.reply_code} {exc.reply_text}")

    with Connection(BROKER, transport_options={"confirm_publish": True}) as conn:
        try:
            conn.Producer(on_return=on_return).publish(
                json.dumps(event).encode(),
                exchange=EVENTS,
                routing_key=event["type"],
                mandatory=True,  # unroutable: returned to us, not dropped
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,  # persistent
                message_id=event["event_id"],
                retry=True,
                retry_policy={"max_retries": 3},
            )  # returns once the broker confirmed it (after a return, if any)
        except MessageNacked:
            return "refused by the broker (nack)"
        except conn.channel_errors as exc:  # e.g. 404: the exchange does not exist
            hint = "; run `tidings setup`" if getattr(exc, "reply_code", 0) == 404 else ""
            return f"refused by the broker: {getattr(exc, 'reply_text', exc)}{hint}"
        except (OperationalError, *conn.connection_errors) as exc:
            return f"broker unreachable: {exc}"
    if returned:
        return f"returned as unroutable ({returned[0]}): no queue is bound; run `tidings setup`"
    return None


def main() -> int:
    if len(sys.argv) > 1:
        event = json.loads(sys.argv[1])
    else:
        event = {
            "type": "entity.updated",
            "entity": "order",
            "id": 42,
            "changed_by": 1,
            "fields": ["status"],
        }
    event.setdefault("event_id", str(uuid.uuid4()))  # kept on a resend: browsers drop duplicates
    event.setdefault("at", datetime.now(UTC).isoformat())
    failure = send(event)
    if failure:
        print(f"event {event['event_id']} not sent, {failure}", file=sys.stderr)
        return 1
    print(f"published {event['type']} event_id={event['event_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
