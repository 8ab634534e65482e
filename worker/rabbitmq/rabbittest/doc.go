// Package rabbittest holds test support shared by every test that talks to
// the real RabbitMQ broker.
//
// Tests that inject broker faults (rabbitmqctl stop_app / start_app,
// rabbitmqctl close_connection, memory alarms) disturb every other test using
// the broker at the same moment, including test binaries of other packages
// running concurrently. They take an exclusive machine-wide lock with
// Exclusive; every other broker-using test takes the shared lock with Shared,
// so fault tests wait for ordinary tests to finish and vice versa, while
// ordinary tests still run concurrently with each other.
package rabbittest
