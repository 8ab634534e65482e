// Package jobs defines what a revsync export job is: job and step
// definitions loaded from YAML, the integrations and connectors that name
// them, the job context with its ID filter, the small Reader, Processor and
// Writer interfaces that connectors implement, the Runner that drives the
// steps of one run, the record of that run, and the error classes the worker
// uses to decide what happens to a message.
//
// The package imports nothing else of revsync. Connectors implement its
// interfaces; the worker calls its Runner.
package jobs
