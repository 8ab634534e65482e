// Package worker turns broker messages into job runs. It decodes and
// validates an entity-changed event (Decode, against the embedded JSON
// Schema schema/entity-changed.v1.json), resolves its route in the
// jobs.Catalog, runs the connector's export job with a per-message deadline,
// and decides what happens to the message: acknowledged once exported,
// dead-lettered with its error class otherwise, requeued when the worker
// stops before it could finish.
//
// The package knows no broker. A broker adapter (worker/rabbitmq) hands it
// deliveries through a Source and settles them through each Delivery's
// Settler: Ack, DeadLetter (publish a confirmed copy to the dead-letter
// queue, then ack the original), Retry (publish a confirmed copy to wait in
// a delay queue, then ack the original) and Requeue.
//
// What happens to a message that did not export is decided in one place
// (see RetryPolicy): a transient failure is retried after a delay from the
// retry schedule (1s, 5s, 30s, 2m, 10m by default, jittered, never shorter
// than a remote's Retry-After) until the connector's MaxAttempts (5) is
// reached, then dead-lettered with class retries_exhausted; any other
// failure is dead-lettered at once with its class. The attempt count
// travels in revsync's own header, HeaderAttempt, never the broker's.
//
// A circuit breaker per integration (see BreakerConfig) stops running an
// integration's messages while most of its recent runs failed transiently:
// they are deferred through Retry, their attempt unchanged, for a
// cool-down; then one probe decides whether to resume. Other integrations
// keep flowing.
//
// The rules it keeps:
//   - a message is acknowledged only once its outcome is safe: exported, or
//     its retry or dead-letter copy confirmed by the broker;
//   - a retry or dead-letter publish that fails leaves the original
//     unacknowledged and is retried with capped exponential backoff while the
//     worker runs; on shutdown the original is requeued instead;
//   - settling runs on a context detached from the job's, so a cancelled job
//     still settles its message;
//   - each message ends in exactly one structured log line, written where its
//     outcome is decided;
//   - on shutdown the worker stops taking deliveries at once, lets in-flight
//     messages finish within Config.ShutdownGrace and requeues the rest.
package worker
