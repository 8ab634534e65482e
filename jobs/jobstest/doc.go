// Package jobstest is test support for code built on package jobs:
// hand-written Reader, Processor and Writer fakes that record what they see
// and can be programmed with Func fields, a one-step Route to run them, and
// RunWriterConformance, the behaviour every jobs.Writer must show (create,
// idempotent repeat, update, delete, delete of a missing entity, batches).
package jobstest
