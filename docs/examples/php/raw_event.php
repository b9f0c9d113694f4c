<?php
// Send one raw event to tidings from PHP with the amqp extension: confirmed, mandatory, persistent.
//
//   TIDINGS_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// php docs/examples/php/raw_event.php
//
// Prints `published <type> event_id=<id>` once the broker has the message in a
// queue. Exits 1 with one line on stderr if the broker returns it (no queue is
// bound: run `tidings setup`) or refuses it. An event given as JSON in the first
// argument is sent instead; one without `event_id` gets a new one, so a resend of
// the same JSON with the printed `event_id` is dropped by browsers as a duplicate.
// Needs the amqp extension (Debian: php-amqp; elsewhere: pecl install amqp).

function fail(string $message): never
{
    fwrite(STDERR, $message . PHP_EOL);
    exit(1);
}

function uuid4(): string
{
    $bytes = random_bytes(16);
    $bytes[6] = chr(ord($bytes[6]) & 0x0f | 0x40); // version 4
    $bytes[8] = chr(ord($bytes[8]) & 0x3f | 0x80); // RFC 4122 variant
    return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($bytes), 4));
}

// amqp://user:password@host:port/vhost, as Celery and kombu read it: the path after
// the first `/` is the vhost, URL-encoded (`//` and `/%2F` are the vhost `/`).
function broker_settings(string $url): array
{
    $parts = parse_url($url);
    if ($parts === false || ($parts['scheme'] ?? '') !== 'amqp') {
        fail("TIDINGS_BROKER_URL must be amqp://user:password@host:port/vhost, not $url");
    }
    $path = $parts['path'] ?? '';
    return [
        'host' => $parts['host'] ?? '127.0.0.1',
        'port' => $parts['port'] ?? 5672,
        'login' => rawurldecode($parts['user'] ?? 'guest'),
        'password' => rawurldecode($parts['pass'] ?? 'guest'),
        'vhost' => strlen($path) > 1 ? rawurldecode(substr($path, 1)) : '/',
        'connect_timeout' => 5,
        'read_timeout' => 10,
    ];
}

/** Publish $event; null once the broker has it in a queue, else why not. */
function send_event(array $event, string $broker): ?string
{
    $returned = null;
    $nacked = false;
    try {
        $connection = new AMQPConnection(broker_settings($broker));
        $connection->connect();
        $channel = new AMQPChannel($connection);
        $channel->confirmSelect();
        $channel->setReturnCallback(
            function (int $code, string $text, string $exchange, string $key, AMQPBasicProperties $properties, string $body) use (&$returned) {
                $returned = "$code $text"; // the broker's basic.return; its ack follows
            }
        );
        $channel->setConfirmCallback(
            fn (int $tag, bool $multiple) => false, // acked: stop waiting
            function (int $tag, bool $multiple, bool $requeue) use (&$nacked) {
                $nacked = true;
                return false;
            }
        );
        $exchange = new AMQPExchange($channel);
        $exchange->setName('tidings.events'); // `tidings setup` declares it
        $exchange->publish(
            json_encode($event, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE),
            $event['type'],
            AMQP_MANDATORY, // unroutable: returned to us, not dropped
            [
                'content_type' => 'application/json',
                'content_encoding' => 'utf-8',
                'delivery_mode' => 2, // persistent
                'message_id' => $event['event_id'],
            ]
        );
        $channel->waitForConfirm(10.0);
        $connection->disconnect();
    } catch (AMQPConnectionException $exc) {
        return 'broker unreachable: ' . strtok($exc->getMessage(), "\n");
    } catch (AMQPException $exc) { // e.g. 404: the exchange does not exist
        $hint = str_contains($exc->getMessage(), 'no exchange') ? '; run `tidings setup`' : '';
        return 'refused by the broker: ' . strtok($exc->getMessage(), "\n") . $hint;
    }
    if ($returned !== null) {
        return "returned as unroutable ($returned): no queue is bound; run `tidings setup`";
    }
    return $nacked ? 'refused by the broker (nack)' : null;
}

$broker = getenv('TIDINGS_BROKER_URL') ?: 'amqp://guest:guest@127.0.0.1:5672//';
$event = isset($argv[1])
    ? json_decode($argv[1], true, 512, JSON_THROW_ON_ERROR)
    : ['type' => 'entity.updated', 'entity' => 'order', 'id' => 42, 'changed_by' => 1, 'fields' => ['status']];
$event['event_id'] ??= uuid4(); // kept on a resend: browsers drop duplicates
$event['at'] ??= gmdate('Y-m-d\TH:i:s\Z');
$failure = send_event($event, $broker);
if ($failure !== null) {
    fail("event {$event['event_id']} not sent, $failure");
}
echo "published {$event['type']} event_id={$event['event_id']}", PHP_EOL;
