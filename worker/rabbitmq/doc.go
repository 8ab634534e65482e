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
//     quorum queue bound to it with "#".
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
package rabbitmq
