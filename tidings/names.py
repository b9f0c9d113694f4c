"""The stable names of the contract: realm, roles, queues, exchanges, headers, procedures.

Other programs rely on these (shared/DESIGN.md); everything in tidings takes
them from here.
"""

from __future__ import annotations

REALM = "tidings"
BACKEND_AUTHID = "tidings-backend"
BACKEND_ROLE = "backend"
FRONTEND_ROLE = "frontend"

# RabbitMQ. Celery tasks go to the durable queue `tidings`; raw JSON domain
# events to the topic exchange `tidings.events` (routing key = the event's
# type), consumed from the queue of the same name; what cannot be published
# goes to `tidings.events.dead` with the reason in REASON_HEADER.
TASK_QUEUE = "tidings"
TASK_EXCHANGE = "tidings"
EVENTS_EXCHANGE = "tidings.events"
EVENTS_QUEUE = "tidings.events"
DEAD_QUEUE = "tidings.events.dead"
CONSUMED_QUEUES = (TASK_QUEUE, EVENTS_QUEUE)
# Shared mode: what the workers took in goes to every router node through this
# fan-out exchange, into one queue per node.
NODES_EXCHANGE = "tidings.nodes"


def node_queue(node: str) -> str:
    """The delivery queue of a router node (shared mode)."""
    return f"tidings.node.{node}"


REASON_HEADER = "x-tidings-reason"
# Where a dead letter came from, so that it can be replayed: the routing key
# of a raw event, or the name of a Celery task.
ROUTING_KEY_HEADER = "x-tidings-routing-key"
TASK_HEADER = "x-tidings-task"
# How often a dead letter was replayed, and how often a message was handed
# back after a transient failure.
REPLAYS_HEADER = "x-tidings-replays"
REDELIVERIES_HEADER = "x-tidings-redeliveries"
# Why a message was dead-lettered, in a word (the `reason` label of
# tidings_events_dead_lettered_total): its input is not valid; the router
# refused it or it could not be sent at all; it failed for a passing reason
# too many times.
DEAD_INVALID, DEAD_REFUSED, DEAD_REDELIVERIES = "invalid", "refused", "redeliveries"
DEAD_LETTER_CODES = (DEAD_INVALID, DEAD_REFUSED, DEAD_REDELIVERIES)

# Celery task names.
PUBLISH_TASK = "tidings.publish"
ENTITY_CHANGED_TASK = "tidings.entity_changed"
MAINTENANCE_TASK = "tidings.maintenance"

# WAMP procedures.
AUTHORIZE_PROCEDURE = "tidings.authorize"
EDITORS_PROCEDURE = "tidings.entity.editors"
HISTORY_PROCEDURE = "tidings.history.since"
MAINTENANCE_STATUS_PROCEDURE = "tidings.maintenance.status"
PRESENCE_HERE_PROCEDURE = "tidings.presence.here"
CHAT_SEND_PROCEDURE = "tidings.chat.send"
# What the router's own components register for browsers (declared in the
# shipped catalogue, like an application's procedures); each checks its
# caller's permissions itself.
PUBLIC_PROCEDURES = frozenset(
    {
        EDITORS_PROCEDURE,
        HISTORY_PROCEDURE,
        MAINTENANCE_STATUS_PROCEDURE,
        PRESENCE_HERE_PROCEDURE,
        CHAT_SEND_PROCEDURE,
    }
)
