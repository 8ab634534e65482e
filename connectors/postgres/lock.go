package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/revsync/revsync/jobs"
)

// DefaultLockWaitTimeout bounds the wait for another run of the same
// entity when LockConfig.WaitTimeout is zero.
const DefaultLockWaitTimeout = 30 * time.Second

const (
	// lockGrace separates the bounds of one lock wait: the server cancels
	// the wait (lock_timeout) after the wait, its statement_timeout fires
	// lockGrace later, and the client gives up lockGrace after that. A
	// wait limited by the caller's deadline ends lockGrace before it, so
	// the server's clean cancel comes first.
	lockGrace = time.Second
	// unlockTimeout bounds pg_advisory_unlock, and closing a connection
	// that is destroyed.
	unlockTimeout = 5 * time.Second
)

// The statements of a lock. The timeouts are set with is_local, so they
// last only for the batch's implicit transaction (one pipeline, one Sync)
// and then revert to the pool's session defaults.
const (
	lockTimeoutsSQL = "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
	lockSQL         = "SELECT pg_advisory_lock($1)"
	unlockSQL       = "SELECT pg_advisory_unlock($1)"
	// holdSQL and unholdSQL set and reset the bound on an idle lock
	// holder (LockConfig.HoldTimeout), for the session.
	holdSQL   = "SELECT set_config('idle_session_timeout', $1, false)"
	unholdSQL = "RESET idle_session_timeout"
)

// LockConfig configures an AdvisoryLocker. The zero value of every field
// means its default.
type LockConfig struct {
	// WaitTimeout bounds the wait for another run of the same entity to
	// release its lock; the caller's context deadline bounds it too. A
	// wait that runs out is a retryable error wrapping jobs.ErrEntityLocked.
	// Default DefaultLockWaitTimeout (30s).
	WaitTimeout time.Duration
	// AcquireTimeout bounds the wait for a free pool connection. Give it
	// the pool's Config.AcquireTimeout. Default DefaultAcquireTimeout (5s).
	AcquireTimeout time.Duration
	// HoldTimeout, when set, bounds how long a lock may be held by a
	// session that does nothing: the lock's session gets it as its
	// idle_session_timeout (PostgreSQL 14+), so a worker that freezes
	// (SIGSTOP, a stalled VM) while holding a lock loses its session, and
	// the lock, once that much time has passed. Give it a little more than
	// the longest a run may take (the worker's message timeout). Default 0:
	// no bound.
	HoldTimeout time.Duration
	// Logger receives debug messages about locks taken and a warning when
	// a lock could not be released and its connection was closed instead.
	// Default zap.NewNop().
	Logger *zap.Logger
}

// AdvisoryLocker is a jobs.EntityLocker on PostgreSQL session-level
// advisory locks. It serialises the runs of one entity across every
// replica connected to the same database: runs of the same entity wait
// their turn, runs of different entities do not meet. It is safe for
// concurrent use.
//
// The lock key is the FNV-1a 64-bit hash of jobs.EntityLockKey, as a
// bigint: in pg_locks it shows as locktype 'advisory', objsubid 1, classid
// its high and objid its low 32 bits. Two entities whose keys collide
// merely wait for each other.
//
// Each lock holds one pool connection from LockEntity until unlock,
// waiting or holding, on top of the connection the run's reader takes.
// The pool's MaxConns (database.max_conns) must therefore be at least
// twice the worker's concurrency, or lock holders can take every
// connection and leave their own readers none.
//
// The lock lives as long as its database session: if the session ends
// (the server terminates the backend, the connection drops) the server
// releases the lock while the run may still be going. So it needs a direct
// or session-pooled connection (a transaction-pooling PgBouncer breaks
// session locks), and a server-side idle_session_timeout, if set, must
// exceed the worker's message timeout.
type AdvisoryLocker struct {
	pool *pgxpool.Pool
	cfg  LockConfig
}

var _ jobs.EntityLocker = (*AdvisoryLocker)(nil)

// NewAdvisoryLocker returns a locker taking its connections from pool.
// Zero or negative durations in cfg mean their defaults. It panics if pool
// is nil.
func NewAdvisoryLocker(pool *pgxpool.Pool, cfg LockConfig) *AdvisoryLocker {
	if pool == nil {
		panic("postgres: NewAdvisoryLocker: nil pool")
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultLockWaitTimeout
	}
	if cfg.AcquireTimeout <= 0 {
		cfg.AcquireTimeout = DefaultAcquireTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &AdvisoryLocker{pool: pool, cfg: cfg}
}

// Config returns the locker's configuration with defaults filled in.
func (l *AdvisoryLocker) Config() LockConfig { return l.cfg }

// LockEntity implements jobs.EntityLocker: it takes a pool connection and
// waits on it, with pg_advisory_lock, for the lock of jc's entity.
//
// The wait is bounded on the server: lock_timeout is set to the smaller of
// WaitTimeout and the time ctx leaves (less a second), and
// statement_timeout just above it, for that one statement only. When the
// server cancels the wait, no lock is held and the connection goes back to
// the pool as it was; the error is a *jobs.TransientError wrapping
// jobs.ErrEntityLocked, "another run of <key> holds its lock". When the
// wait ends on the client instead (ctx cancelled, the server unresponsive),
// whether the lock was granted is unknown, so the connection is closed and
// its session, with any lock it got, ends. No free connection within
// AcquireTimeout is a *jobs.TransientError too. Every error names the
// entity's key and is retryable.
//
// unlock runs pg_advisory_unlock and returns the connection to the pool.
// If that fails, or the session no longer held the lock, it closes the
// connection instead, so a locked session never returns to the pool. It
// takes at most a few seconds, and calls after the first do nothing.
func (l *AdvisoryLocker) LockEntity(ctx context.Context, jc *jobs.Context) (unlock func(), err error) {
	key := jobs.EntityLockKey(jc)
	id := entityAdvisoryKey(jc)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	pc, err := Acquire(ctx, l.pool, l.cfg.AcquireTimeout)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}

	wait := l.cfg.WaitTimeout
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)-lockGrace)
	}
	// lock_timeout 0 would mean "wait forever"; a free lock is granted at
	// once even with the shortest wait.
	wait = max(wait, time.Millisecond)
	qctx, cancel := context.WithTimeout(ctx, wait+2*lockGrace)
	defer cancel()

	start := time.Now()
	batch := &pgx.Batch{}
	batch.Queue(lockTimeoutsSQL, millis(wait), millis(wait+lockGrace))
	batch.Queue(lockSQL, id)
	if l.cfg.HoldTimeout > 0 {
		batch.Queue(holdSQL, millis(l.cfg.HoldTimeout))
	}
	err = pc.SendBatch(qctx, batch).Close()
	waited := time.Since(start)
	if err != nil {
		return nil, l.lockFailed(ctx, pc, key, id, wait, err)
	}

	log := l.cfg.Logger.With(lockFields(jc, key, id)...)
	log.Debug("entity lock acquired", zap.Duration("waited", waited))
	var once sync.Once
	return func() {
		once.Do(func() { l.unlock(pc, id, log, start) })
	}, nil
}

// lockFailed cleans up after a failed lock batch and returns its error.
// A server error means the server answered and the batch's implicit
// transaction rolled back: the lock was not granted and the connection is
// idle, so it goes back to the pool (which destroys it anyway if it is
// not idle). Any other error leaves the lock's state unknown, so the
// connection is closed.
func (l *AdvisoryLocker) lockFailed(ctx context.Context, pc *pgxpool.Conn, key string, id int64, wait time.Duration, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pc.Conn().IsClosed() {
		destroy(pc)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("lock %s: wait interrupted, connection closed: %w", key, ctxErr)
		}
		return fmt.Errorf("lock %s (key %d): connection closed, the lock's state being unknown: %w", key, id, err)
	}
	pc.Release()
	switch pgErr.Code {
	case "55P03", // lock_not_available: lock_timeout
		"57014": // query_canceled: statement_timeout
		return &jobs.TransientError{Err: fmt.Errorf("another run of %s holds its lock: gave up after %s: %w: %w",
			key, wait, jobs.ErrEntityLocked, err)}
	}
	// Not classified: whatever the server refused, it is not the
	// message's fault, so it stays retryable.
	return fmt.Errorf("lock %s (key %d): %w", key, id, err)
}

// unlock releases the lock held on pc and returns pc to the pool, or
// closes pc when the lock cannot be released.
func (l *AdvisoryLocker) unlock(pc *pgxpool.Conn, id int64, log *zap.Logger, locked time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	var released bool
	err := pc.QueryRow(ctx, unlockSQL, id).Scan(&released)
	if err == nil && released && l.cfg.HoldTimeout > 0 {
		_, err = pc.Exec(ctx, unholdSQL)
	}
	switch {
	case err == nil && released:
		pc.Release()
		log.Debug("entity lock released", zap.Duration("held", time.Since(locked)))
		return
	case err == nil:
		err = errors.New("the session did not hold the lock")
	}
	log.Warn("entity lock not released: closing its connection so that the server ends the session and its locks",
		zap.Duration("held", time.Since(locked)), zap.Error(err))
	destroy(pc)
}

// destroy takes pc out of the pool and closes it: the server ends the
// session and releases every lock it holds.
func destroy(pc *pgxpool.Conn) {
	conn := pc.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	_ = conn.Close(ctx) // the session ends either way: Close always closes the socket
}

// entityAdvisoryKey is the advisory lock key of jc's entity. Advisory locks
// span the whole database, so the table is part of it: two deployments
// sharing one database (a schema each, say) never wait on each other.
func entityAdvisoryKey(jc *jobs.Context) int64 {
	return advisoryKey(jc.Entity + "\x00" + jobs.EntityLockKey(jc))
}

// advisoryKey is the advisory lock key of an entity lock key: its FNV-1a
// 64-bit hash as a bigint.
func advisoryKey(key string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key)) // a hash.Hash never fails
	return int64(h.Sum64())
}

// millis is d in whole milliseconds, at least 1, as a setting value.
func millis(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}

// lockFields are the log fields of one entity's lock.
func lockFields(jc *jobs.Context, key string, id int64) []zap.Field {
	return []zap.Field{
		zap.String("integration", jc.Integration),
		zap.String("connector", jc.Connector),
		zap.Stringer("entity_key", jc.IDFilter),
		zap.String("message_id", jc.MessageID),
		zap.Int("attempt", jc.Attempt),
		zap.String("lock", key),
		zap.Int64("lock_key", id),
	}
}
