// Package rabbitmq is revsync's RabbitMQ adapter for package worker, built
// on github.com/rabbitmq/amqp091-go.
//
// Dial connects, declares the topology idempotently and opens a publisher:
//
//   - the events exchange (durable topic) events are published to;
//   - the work queue, a quorum queue bound to it with the binding keys,
//     dead-lettering to the dead-letter exchange (at-least-once) once a
//     message has been delivered DeliveryLimit times, which bounds the
//     redeliveries of a message whose processing crashes the worker;
//   - the dead-letter exchange (durable topic) and the dead-letter queue, a
//     quorum queue bound to it with "#";
//   - one delay queue per retry delay (see Delayed retries).
//
// A queue or exchange that already exists with different arguments is never
// changed or deleted: Dial fails with a *TopologyError naming it and the
// argument.
//
// Client.Run consumes the work queue (manual acknowledgements, prefetch
// bounded) and hands the deliveries to a worker.Worker. Each delivery is
// settled on the channel it arrived on and nowhere else. Dead-lettering
// publishes a copy of the message (original body, properties and routing
// key, plus x-revsync-* headers) to the dead-letter exchange through the
// Publisher, which waits for the broker's confirm with a deadline and treats
// a returned (unroutable) message as a failure; only then is the original
// acknowledged.
//
// # Delayed retries
//
// Retries wait on the broker, in delay queues: one durable quorum queue per
// delay of Config.RetryDelays, named "<queue>.retry.<delay>"
// (RetryQueueName, e.g. revsync.work.retry.5s), without consumers. Its
// x-message-ttl is its delay; it dead-letters expired messages, at least
// once (the message stays in the delay queue until the work queue took it),
// to the default exchange with the work queue's name as routing key. A
// message waiting for its retry therefore holds no worker slot and survives
// worker restarts.
//
// Settler.Retry publishes a copy of the message — body, properties and
// headers, plus x-revsync-attempt and x-revsync-original-exchange and
// -routing-key (dead-lettering replaces the routing key; a later
// dead-letter copy is published with the original one) — to the delay
// queue of the smallest delay at least as long as the wanted one (the
// longest when none is), with the wanted delay as its own expiration; then
// it acks the original. A queue expires messages only at its head, so a
// message may wait behind an older one with a longer expiration, but never
// past its queue's delay: the wait lies between the wanted delay and the
// queue's. The worker's jitter only shortens a scheduled delay, so a
// scheduled retry lands in its own delay's queue; a Retry-After between two
// delays waits up to the longer one, and one past the longest delay is cut
// to it.
//
// # Connections
//
// A Client publishes on one connection (named Config.ConnectionName +
// PublisherSuffix, opened by Dial) and consumes on another
// (Config.ConnectionName, opened by the first Consume or Run), as RabbitMQ
// recommends: see Resource alarms.
//
// # Connection loss
//
// The Client survives the loss of either connection (broker restart,
// network, `rabbitmqctl close_connection`, missed heartbeats) and of its
// consuming channel (consumer_timeout, consumer cancelled by the broker):
//
//   - it logs the loss once, at Warn, with the broker's reason, and becomes
//     not ready (Client.Ready, Config.OnState, worker.Metrics.Connected);
//   - it reconnects with capped exponential backoff and jitter
//     (Config.ReconnectBackoff, 500ms doubling up to 30s), declares the
//     topology again, restores the prefetch and consumes again, on the same
//     Consumer: the worker.Worker given to Run keeps running throughout;
//   - a delivery is settled only on the channel it arrived on. One whose
//     channel is gone settles with an error wrapping worker.ErrDeliveryLost
//     (the worker logs "will be redelivered" and does not retry it); the
//     broker redelivers it, and exporting it again is idempotent. Deliveries
//     of a lost channel the worker had not taken yet are dropped, for the
//     same reason;
//   - the Publisher opens a channel on the new connection. A publish in
//     flight when the connection drops fails at once with ErrNotConfirmed
//     (the confirms of a closed channel are nacked); one made while
//     reconnecting waits for the connection within its deadline. An original
//     whose dead-letter copy failed so stays unacknowledged: the worker
//     publishes the copy again while the original's channel lives, else the
//     original comes back and is handled again;
//   - the reconnect budget Config.ReconnectTimeout (default: none, retry
//     forever) bounds how long a connection may stay lost, Dial's first
//     connection included; once it runs out, Dial, Run and publishes fail
//     with ErrUnreachable, naming the broker. A topology that conflicts when
//     declared again (a *TopologyError) ends the client at once.
//
// Duplicates are possible, never losses: a dead-letter (or retry) copy that
// the broker enqueued but whose confirm was lost with the connection, or
// whose original's ack was lost with it, is published again when the
// original is handled again, so the dead-letter queue may hold a message
// twice.
//
// # Resource alarms
//
// During a memory or disk alarm the broker blocks a connection as soon as it
// publishes and stops reading from it until the alarm clears: anything sent
// on it waits, acknowledgements included. Hence the two connections: while
// the publishing one is blocked, the consumer keeps exporting and
// acknowledging messages (which helps the broker out of the alarm); only the
// messages needing a publish (dead-letter or retry copies) wait,
// unacknowledged. The client logs the block at Warn with the broker's reason
// ("connection blocked by the broker: low on memory") and the unblock at
// Info, and is not ready meanwhile. A publish in flight when the block comes
// fails by its deadline with ErrNotConfirmed (the broker may still enqueue it
// once unblocked); later ones send nothing while the block lasts and fail by
// their deadline too.
package rabbitmq
