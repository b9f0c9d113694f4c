// Send one raw event to tidings from Node with amqplib: confirmed, mandatory, persistent.
//
//   TIDINGS_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// node docs/examples/node/raw_event.js
//
// Prints `published <type> event_id=<id>` once the broker has the message in a
// queue. Exits 1 with one line on stderr if the broker returns it (no queue is
// bound: run `tidings setup`) or refuses it. An event given as JSON in the first
// argument is sent instead; one without `event_id` gets a new one, so a resend of
// the same JSON with the printed `event_id` is dropped by browsers as a duplicate.
const { randomUUID } = require("node:crypto");
const amqp = require("amqplib");

const broker = process.env.TIDINGS_BROKER_URL || "amqp://guest:guest@127.0.0.1:5672//";
const event = process.argv[2]
  ? JSON.parse(process.argv[2])
  : { type: "entity.updated", entity: "order", id: 42, changed_by: 1, fields: ["status"] };
event.event_id ??= randomUUID(); // kept on a resend: browsers drop duplicates
event.at ??= new Date().toISOString();

const unreachable = (error) => {
  throw new Error(`broker unreachable: ${error.message}`);
};

async function send() {
  const connection = await amqp.connect(broker).catch(unreachable);
  try {
    const channel = await connection.createConfirmChannel();
    let returned = null;
    let refused = null;
    channel.on("return", (message) => {
      const { replyCode, replyText } = message.fields;
      returned = `${replyCode} ${replyText}`;
    });
    channel.on("error", (error) => {
      refused = error.message; // e.g. 404: the exchange does not exist
    });
    channel.publish(
      "tidings.events", // `tidings setup` declares it
      event.type,
      Buffer.from(JSON.stringify(event)),
      {
        mandatory: true, // unroutable: returned to us, not dropped
        persistent: true,
        contentType: "application/json",
        contentEncoding: "utf-8",
        messageId: event.event_id,
      },
    );
    try {
      await channel.waitForConfirms(); // rejects on a nack or a closed channel
    } catch (error) {
      const reason = refused || error.message;
      const hint = reason.includes("no exchange") ? "; run `tidings setup`" : "";
      throw new Error(`refused by the broker: ${reason}${hint}`);
    }
    if (returned) {
      throw new Error(`returned as unroutable (${returned}): no queue is bound; run \`tidings setup\``);
    }
    await channel.close();
  } finally {
    await connection.close().catch(() => {});
  }
}

send().then(
  () => console.log(`published ${event.type} event_id=${event.event_id}`),
  (error) => {
    console.error(`event ${event.event_id} not sent, ${error.message.split("\n")[0]}`);
    process.exitCode = 1;
  },
);
