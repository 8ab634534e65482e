// Package workertest provides hand-written fakes for testing code around
// package worker: a Settler and a Source that record what the worker did
// with each delivery, a small jobs.Catalog wired to fake services, and
// builders for event bodies.
package workertest
