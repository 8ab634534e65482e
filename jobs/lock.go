package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EntityLocker serialises the job runs of one entity across every worker
// replica, so that an export that read an older state of the entity cannot
// land at the remote after one that read a newer state. Runs of different
// entities never wait for each other; runs of the same entity wait their
// turn rather than fail.
//
// The worker calls LockEntity before Runner.Run, with the run's context, and
// calls unlock after the run, whatever its outcome (success, failure or
// panic). LockEntity blocks until no other run of jc's entity (same
// EntityLockKey) holds the lock, until its own wait bound passes, or until
// ctx ends. When it returns an error the lock is not held, unlock is nil and
// the run must not start; the error is retryable unless it says otherwise
// (see ErrEntityLocked). unlock never blocks for long, may be called from
// any goroutine and is safe to call more than once: calls after the first
// do nothing.
type EntityLocker interface {
	LockEntity(ctx context.Context, jc *Context) (unlock func(), err error)
}

// EntityLockerFunc adapts a function to an EntityLocker.
type EntityLockerFunc func(ctx context.Context, jc *Context) (unlock func(), err error)

// LockEntity calls f.
func (f EntityLockerFunc) LockEntity(ctx context.Context, jc *Context) (func(), error) {
	return f(ctx, jc)
}

var _ EntityLocker = EntityLockerFunc(nil)

// ErrEntityLocked is wrapped by the error an EntityLocker returns when it
// gave up waiting because another run of the same entity held the lock the
// whole time. That is contention, not a failure of the remote or of the
// data: the message is retried later, and the worker need not count it
// against the integration's health.
var ErrEntityLocked = errors.New("entity locked by another run")

// EntityLockKey returns the key that names jc's entity for an EntityLocker:
// the integration, the connector and the ID filter's column=value pairs in
// filter order (the connector's key order, as Entity.IDFilter builds it).
// Message ID, attempt, operation and parameters are not part of it: every
// run of the entity shares the key.
//
// Every component is length-prefixed ("<bytes>:<text>") and components are
// joined by "|", so the key is unambiguous whatever characters the names
// and values hold: integration "a|b" with connector "c" never meets
// integration "a" with connector "b|c". An example:
//
//	13:northwind_crm|10:order_line|8:order_id=5:10248|10:product_id=2:11
//
// Values are written as their text (an int64 in decimal), so a string "42"
// and an integer 42 give the same key: replicas that briefly disagree about
// a key column's type during a configuration change still exclude each
// other. The format is stable; replicas of different versions must compute
// the same key for the lock to work across a rolling upgrade.
func EntityLockKey(jc *Context) string {
	var b strings.Builder
	writeLockKeyField(&b, jc.Integration)
	b.WriteByte('|')
	writeLockKeyField(&b, jc.Connector)
	for _, p := range jc.IDFilter {
		b.WriteByte('|')
		writeLockKeyField(&b, p.Column)
		b.WriteByte('=')
		writeLockKeyField(&b, lockKeyValue(p.Value))
	}
	return b.String()
}

// writeLockKeyField writes s length-prefixed.
func writeLockKeyField(b *strings.Builder, s string) {
	b.WriteString(strconv.Itoa(len(s)))
	b.WriteByte(':')
	b.WriteString(s)
}

// lockKeyValue is the text of an identifier value.
func lockKeyValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return fmt.Sprint(v)
}
