package jobs

import (
	"errors"
	"fmt"
	"time"
)

// Class names why a message did not end as a successful export. It is
// written into the dead-letter copy of a message (header x-revsync-error-class)
// and used as a metric label, so its values are stable.
type Class string

// The error classes. Every error is retryable (ClassTransient) unless it is
// marked otherwise with Permanent or one of the typed errors below.
const (
	// ClassInvalidMessage: the message could not be decoded or failed the
	// entity-changed schema. Replaying it unchanged fails again.
	ClassInvalidMessage Class = "invalid_message"
	// ClassUnknownRoute: the integration, connector or job it names is not
	// configured.
	ClassUnknownRoute Class = "unknown_route"
	// ClassIntegrationDisabled: the integration is disabled or has two-way
	// sync off; the message is parked so it can be replayed once enabled.
	ClassIntegrationDisabled Class = "integration_disabled"
	// ClassPermanent: the job failed in a way that retrying cannot fix
	// (a 4xx from the remote, an undefined column, a mapping error).
	ClassPermanent Class = "permanent"
	// ClassPanic: a reader, processor or writer panicked.
	ClassPanic Class = "panic"
	// ClassTransient: the job failed in a way a later attempt may not
	// (network error, timeout, 5xx, lost database connection).
	ClassTransient Class = "transient"
	// ClassRetriesExhausted: a transient failure outlived its attempts.
	ClassRetriesExhausted Class = "retries_exhausted"
)

// PermanentError marks an error that retrying cannot fix. The worker
// dead-letters the message at once, with the error's Class.
type PermanentError struct {
	Class Class // ClassPermanent when empty
	Err   error
}

// Permanent wraps err as a PermanentError of ClassPermanent. It returns nil
// for a nil err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Class: ClassPermanent, Err: err}
}

// PermanentClass wraps err as a PermanentError of the given class.
func PermanentClass(class Class, err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Class: class, Err: err}
}

func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// TransientError is a retryable error that carries a hint from the remote
// about when to try again (an HTTP Retry-After). Any error that is not a
// PermanentError is retryable; TransientError only adds the hint.
type TransientError struct {
	RetryAfter time.Duration // zero when the remote gave no hint
	Err        error
}

func (e *TransientError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *TransientError) Unwrap() error { return e.Err }

// PanicError is the error of a run whose reader, processor or writer
// panicked. It is permanent: the same input would panic again.
type PanicError struct {
	Service string // "reader", "processor" or "writer" and its name
	Value   any    // what was passed to panic
	Stack   []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic in %s: %v", e.Service, e.Value)
}

// ClassOf returns the class of err: the class of a PermanentError,
// ClassPanic for a PanicError, ClassTransient for any other error, and ""
// for nil.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		if pe.Class == "" {
			return ClassPermanent
		}
		return pe.Class
	}
	var panicErr *PanicError
	if errors.As(err, &panicErr) {
		return ClassPanic
	}
	return ClassTransient
}

// IsPermanent reports whether retrying err cannot help.
func IsPermanent(err error) bool {
	c := ClassOf(err)
	return c != "" && c != ClassTransient
}

// RetryAfter returns the retry hint carried by err, or zero.
func RetryAfter(err error) time.Duration {
	var te *TransientError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}
