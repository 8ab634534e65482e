// Package postgres is revsync's PostgreSQL connector: the connection pool
// every PostgreSQL-backed service shares, the entity_by_id reader that
// loads the row an entity-changed event names, and the advisory lock that
// makes the runs of one entity take turns.
//
// NewPool builds a pgx pool from Config: a bounded number of connections, a
// connect timeout, and a server-enforced statement_timeout set as a session
// parameter. pgx has no acquire timeout of its own, so the services of this
// package bound every Acquire with their own deadline (see Acquire). Errors
// from NewPool never contain the database password, nor a piece of one: a
// password holding an unescaped '#', '/', '?' or '@' can make pgx read part
// of it as a port or a database name and quote it, so a URL that does not
// parse is reported in words (and redacted, when the redaction is certain
// to be complete), never with pgx's explanation unless it holds no secret.
// RedactURL masks passwords in connection strings for anyone who logs or
// reports one.
//
// EntityByIDReader implements jobs.Reader. It is built once per connector
// binding by ReaderFactory, which renders its SELECT once from configuration:
// identifiers come only from the connector's entity settings and are quoted;
// key values only ever travel as bind parameters. Every event reads the
// row, whatever its op, so that repeated, reordered or coalesced events are
// safe: a row that exists is exported as it is now (a delete event for it
// is superseded, with a warning); a row that is gone is exported as a
// deletion for a delete event, and for an upsert becomes a deletion or
// nothing, as the connector's on_missing says.
//
// AdvisoryLocker implements jobs.EntityLocker with session-level advisory
// locks, so that the runs of one entity are serialised across every worker
// replica on the database while runs of different entities never wait for
// each other. Each lock holds a pool connection of its own for the whole
// run: the pool needs at least twice as many connections as the worker
// runs messages at once.
//
// Errors are classified where they leave the package: a lost connection, a
// timeout, a serialization failure or an exhausted server is transient and
// left retryable; an undefined table or column, a syntax or privilege error
// or a value that does not fit its column is wrapped with jobs.Permanent.
//
// The pgtest subpackage holds the test support shared by integration tests:
// a database URL from DATABASE_URL, throw-away schemas and the Northwind
// dataset.
package postgres
