// Package integration holds revsync's black-box end-to-end tests. They
// build the real revsync binary once (go build ./cmd/revsync), run it as a
// subprocess against real RabbitMQ and PostgreSQL and a real REST remote,
// and assert where every published event ended up: exported to the remote
// or, exactly once, in the dead-letter queue.
//
// What the tests need:
//
//   - AMQP_URL and DATABASE_URL; when either is unset, testcontainers starts
//     it if a Docker engine is reachable, otherwise the tests are skipped.
//   - json-server, the remote, pinned in remote/package.json: run
//     `npm ci --prefix integration_test/remote` from the repository root.
//   - the Northwind PostgreSQL dump, NORTHWIND_SQL (default
//     ../shared/datasets/northwind.sql next to the repository).
//
// A missing json-server or dump skips the tests, or fails them when CI is
// set. Each test uses its own schema, exchanges and queues and removes them.
//
// The package has no code outside its tests, which are the external test
// package integration_test. This file is package integration on purpose:
// were it named integration_test too, go/build would take any test file that
// sorts before it (say broker_test.go) for the external test package of a
// package "integration" and refuse the folder (golang/go#45999).
package integration
