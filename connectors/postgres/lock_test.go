package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/revsync/revsync/connectors/postgres/pgtest"
	"github.com/revsync/revsync/jobs"
)

func TestEntityLockKey(t *testing.T) {
	t.Parallel()
	jc := func(integration, connector string, key ...jobs.KeyPart) *jobs.Context {
		return &jobs.Context{Integration: integration, Connector: connector, IDFilter: key}
	}
	tests := []struct {
		name string
		jc   *jobs.Context
		want string
	}{
		{"text key", jc("northwind_crm", "customer", text("customer_id", "ALFKI")),
			"13:northwind_crm|8:customer|11:customer_id=5:ALFKI"},
		{"composite integer key", jc("northwind_crm", "order_line", integer("order_id", 10248), integer("product_id", 11)),
			"13:northwind_crm|10:order_line|8:order_id=5:10248|10:product_id=2:11"},
		{"negative integer", jc("i", "c", integer("id", -7)), "1:i|1:c|2:id=2:-7"},
		{"empty value", jc("i", "c", text("id", "")), "1:i|1:c|2:id=0:"},
		{"no key", jc("i", "c"), "1:i|1:c"},
		{"empty names", jc("", ""), "0:|0:"},
		{"lengths are bytes", jc("i", "c", text("id", "Müller")), "1:i|1:c|2:id=7:Müller"},
		{"separators inside values", jc("a|b", "c=d", text("x:y", "1:z|2:id=1:w")), "3:a|b|3:c=d|3:x:y=12:1:z|2:id=1:w"},
		{"other types as text", jc("i", "c", jobs.KeyPart{Column: "id", Value: 1.5}), "1:i|1:c|2:id=3:1.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, jobs.EntityLockKey(tt.jc))
		})
	}

	// Pairs that a naive join would confuse get different keys.
	distinct := []struct {
		name string
		a, b *jobs.Context
	}{
		{"comma moved between integration and connector", jc("a,b", "c"), jc("a", "b,c")},
		{"bar moved between integration and connector", jc("a|b", "c"), jc("a", "b|c")},
		{"equals moved between column and value", jc("i", "c", text("a=b", "c")), jc("i", "c", text("a", "b=c"))},
		{"one part or two", jc("i", "c", text("id", "x|2:id=1:y")), jc("i", "c", text("id", "x"), text("id", "y"))},
		{"value spilling into the next part", jc("i", "c", text("a", "1|1:b=1:2"), text("c", "3")), jc("i", "c", text("a", "1"), text("b", "2|1:c=1:3"))},
		{"no key or an empty part", jc("i", "c"), jc("i", "c", text("", ""))},
		{"length prefix lookalike", jc("1:a", ""), jc("", "1:a")},
		{"other connector", jc("i", "customer", text("id", "1")), jc("i", "supplier", text("id", "1"))},
		{"other integration", jc("crm", "c", text("id", "1")), jc("erp", "c", text("id", "1"))},
		{"other value", jc("i", "c", integer("id", 1)), jc("i", "c", integer("id", 10))},
	}
	for _, tt := range distinct {
		require.NotEqual(t, jobs.EntityLockKey(tt.a), jobs.EntityLockKey(tt.b), tt.name)
	}

	// Every run of one entity shares the key; a string and an integer of
	// the same text do too (a key type changed on some replicas only).
	base := jc("crm", "customer", text("id", "42"))
	same := []*jobs.Context{
		{Integration: "crm", Connector: "customer", IDFilter: jobs.IDFilter{text("id", "42")},
			Job: "rest_export", Entity: "nw.customers", Op: jobs.OpDelete, MessageID: "m-2", Attempt: 3,
			Parameters: map[string]any{"k": "v"}},
		jc("crm", "customer", integer("id", 42)),
	}
	for _, s := range same {
		require.Equal(t, jobs.EntityLockKey(base), jobs.EntityLockKey(s))
	}
}

// TestEntityLockKeyDecodes proves the key unambiguous over an alphabet of
// troublesome strings: every key decodes back to the components it was
// made of, so no two different entities share one.
func TestEntityLockKeyDecodes(t *testing.T) {
	t.Parallel()
	words := []string{"", "a", "|", "=", ":", "1:a", "|1:", "2:a|"}
	seen := map[string]string{}
	check := func(jc *jobs.Context) {
		key := jobs.EntityLockKey(jc)
		fields, ok := decodeLockKey(key)
		want := []string{jc.Integration, jc.Connector}
		for _, p := range jc.IDFilter {
			want = append(want, p.Column, p.Value.(string))
		}
		require.True(t, ok, "key %q does not decode", key)
		require.Equal(t, want, fields, "key %q", key)
		components := fmt.Sprintf("%q", want)
		if prev, dup := seen[key]; dup {
			require.Equal(t, prev, components, "two entities share key %q", key)
		}
		seen[key] = components
	}
	for _, in := range words {
		for _, co := range words {
			check(&jobs.Context{Integration: in, Connector: co})
			for _, c1 := range words[:4] {
				for _, v1 := range words {
					check(&jobs.Context{Integration: in, Connector: co, IDFilter: jobs.IDFilter{text(c1, v1)}})
					for _, v2 := range words[3:] {
						check(&jobs.Context{Integration: in, Connector: co, IDFilter: jobs.IDFilter{text(c1, v1), text("k", v2)}})
					}
				}
			}
		}
	}
}

// decodeLockKey splits an EntityLockKey back into its length-prefixed
// fields: integration, connector, then column and value of each part.
func decodeLockKey(key string) ([]string, bool) {
	var fields []string
	for i := 0; ; i++ {
		colon := strings.IndexByte(key, ':')
		if colon < 0 {
			return nil, false
		}
		n, err := strconv.Atoi(key[:colon])
		if err != nil || n < 0 || colon+1+n > len(key) {
			return nil, false
		}
		fields = append(fields, key[colon+1:colon+1+n])
		key = key[colon+1+n:]
		if key == "" {
			// integration, connector and whole column=value parts
			return fields, len(fields) >= 2 && len(fields)%2 == 0
		}
		sep := byte('|')
		if i >= 2 && i%2 == 0 {
			sep = '=' // after a column
		}
		if key[0] != sep {
			return nil, false
		}
		key = key[1:]
	}
}

func TestAdvisoryKey(t *testing.T) {
	t.Parallel()
	// FNV-1a 64 test vectors, as a bigint.
	require.Equal(t, int64(-3750763034362895579), advisoryKey(""))    // 0xcbf29ce484222325
	require.Equal(t, int64(-5808556873153909620), advisoryKey("a"))   // 0xaf63dc4c8601ec8c
	require.Equal(t, int64(-2543842089295555209), advisoryKey("foo")) // 0xdcb27518fed9d577
	require.NotEqual(t, advisoryKey("1:i|1:c|2:id=1:1"), advisoryKey("1:i|1:c|2:id=1:2"))
	same := func(table string) *jobs.Context {
		return &jobs.Context{Integration: "i", Connector: "c", Entity: table, IDFilter: jobs.IDFilter{{Column: "id", Value: int64(1)}}}
	}
	require.NotEqual(t, entityAdvisoryKey(same("a.customers")), entityAdvisoryKey(same("b.customers")),
		"the same entity key in two schemas of one database must not share a lock")
}

func TestNewAdvisoryLocker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := NewPool(ctx, Config{URL: "postgres://app@127.0.0.1:1/app", Lazy: true})
	require.NoError(t, err)
	defer pool.Close()

	cfg := NewAdvisoryLocker(pool, LockConfig{}).Config()
	require.Equal(t, DefaultLockWaitTimeout, cfg.WaitTimeout)
	require.Equal(t, DefaultAcquireTimeout, cfg.AcquireTimeout)
	require.NotNil(t, cfg.Logger)
	cfg = NewAdvisoryLocker(pool, LockConfig{WaitTimeout: -1, AcquireTimeout: time.Second}).Config()
	require.Equal(t, DefaultLockWaitTimeout, cfg.WaitTimeout)
	require.Equal(t, time.Second, cfg.AcquireTimeout)
	require.PanicsWithValue(t, "postgres: NewAdvisoryLocker: nil pool", func() { NewAdvisoryLocker(nil, LockConfig{}) })

	// No connection to be had: a transient error naming the entity, not
	// contention.
	l := NewAdvisoryLocker(pool, LockConfig{AcquireTimeout: 200 * time.Millisecond})
	jc := &jobs.Context{Integration: "crm", Connector: "customer", IDFilter: jobs.IDFilter{text("id", "1")}}
	_, err = l.LockEntity(ctx, jc)
	require.Error(t, err)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	require.ErrorContains(t, err, "lock "+jobs.EntityLockKey(jc)+": acquire connection")
	require.NotErrorIs(t, err, jobs.ErrEntityLocked)
}

// lockEnv is one lock test's view of the server: an admin connection to
// look at pg_locks, and an integration name of its own, so that tests
// running at once (here or in other test binaries on the same database)
// never share a lock.
type lockEnv struct {
	url         string
	admin       *pgx.Conn
	integration string
}

func newLockEnv(t *testing.T) *lockEnv {
	t.Helper()
	url := pgtest.URL(t)
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &lockEnv{url: url, admin: pgtest.Connect(t, url), integration: "locktest_" + hex.EncodeToString(b[:])}
}

// job is the job context of message msg about entity id of the test's
// integration.
func (e *lockEnv) job(id, msg string) *jobs.Context {
	return &jobs.Context{
		Integration: e.integration, Connector: "customer", IDFilter: jobs.IDFilter{text("customer_id", id)},
		Op: jobs.OpUpsert, MessageID: msg, Attempt: 1,
	}
}

// pool returns a pool of at most maxConns connections, closed when t ends.
func (e *lockEnv) pool(t *testing.T, maxConns int) *pgxpool.Pool {
	t.Helper()
	return testPool(t, e.url, Config{MaxConns: maxConns, StatementTimeout: 100 * time.Millisecond})
}

// backends returns the backends holding and those waiting for the
// advisory lock of jc's entity in the current database.
func (e *lockEnv) backends(t *testing.T, jc *jobs.Context) (holders, waiters []int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := e.admin.Query(ctx, `
SELECT pid, granted FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = $1`, entityAdvisoryKey(jc))
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var pid int32
		var granted bool
		require.NoError(t, rows.Scan(&pid, &granted))
		if granted {
			holders = append(holders, pid)
		} else {
			waiters = append(waiters, pid)
		}
	}
	require.NoError(t, rows.Err())
	return holders, waiters
}

// waitFor waits until n backends wait for the lock of jc's entity.
func (e *lockEnv) waitFor(t *testing.T, jc *jobs.Context, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, waiters := e.backends(t, jc)
		return len(waiters) == n
	}, 10*time.Second, 5*time.Millisecond, "waiting for %d backends to wait on the lock", n)
}

// requireHeldBy requires the lock of jc's entity held by exactly the
// given backends and nobody waiting.
func (e *lockEnv) requireHeldBy(t *testing.T, jc *jobs.Context, pids ...int32) {
	t.Helper()
	holders, waiters := e.backends(t, jc)
	require.ElementsMatch(t, pids, holders, "holders")
	require.Empty(t, waiters, "waiters")
}

// receive returns what ch delivers within 10s.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	panic("unreachable")
}

// lockFor locks jc's entity with l, requiring success, and unlocks it when
// t ends too: should t fail while it holds the lock, its pool's Close
// would otherwise wait for the connection for ever.
func lockFor(ctx context.Context, t *testing.T, l *AdvisoryLocker, jc *jobs.Context) func() {
	t.Helper()
	unlock, err := l.LockEntity(ctx, jc)
	require.NoError(t, err, "lock %s", jobs.EntityLockKey(jc))
	t.Cleanup(unlock)
	return unlock
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAdvisoryLockerSameEntityWaitsItsTurn(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	l := NewAdvisoryLocker(env.pool(t, 4), LockConfig{})
	first, second := env.job("ALFKI", "m1"), env.job("ALFKI", "m2")

	unlockFirst := lockFor(ctx, t, l, first)

	events := make(chan string, 2)
	done := make(chan error, 1)
	go func() {
		unlock, err := l.LockEntity(ctx, second)
		if err == nil {
			events <- "second locked"
			unlock()
		}
		done <- err
	}()

	// The second run is blocked on the server, not merely slow.
	env.waitFor(t, second, 1)
	select {
	case e := <-events:
		t.Fatalf("%s while the first run holds the lock", e)
	default:
	}
	events <- "first unlocked"
	unlockFirst()
	require.NoError(t, receive(t, done, "lock of the second run"))
	close(events)
	var order []string
	for e := range events {
		order = append(order, e)
	}
	require.Equal(t, []string{"first unlocked", "second locked"}, order)
	env.requireHeldBy(t, first)
}

// TestAdvisoryLockerMutualExclusion: under contention, no two runs of one
// entity are ever inside at once.
func TestAdvisoryLockerMutualExclusion(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	const workers, rounds = 4, 5
	pool := env.pool(t, 2*workers) // a lock connection and a "reader" connection per worker
	l := NewAdvisoryLocker(pool, LockConfig{})
	var inside, maxInside, runs atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				unlock, err := l.LockEntity(ctx, env.job("ALFKI", fmt.Sprintf("m-%d-%d", w, r)))
				if err != nil {
					errs <- err
					continue
				}
				n := inside.Add(1)
				for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
				}
				// A round trip on another connection, as a run's read
				// would: time for another run to slip in if it could.
				if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
					errs <- err
				}
				runs.Add(1)
				inside.Add(-1)
				unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, workers*rounds, runs.Load())
	require.EqualValues(t, 1, maxInside.Load())
	env.requireHeldBy(t, env.job("ALFKI", ""))
}

func TestAdvisoryLockerDifferentEntitiesDoNotWait(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	l := NewAdvisoryLocker(env.pool(t, 8), LockConfig{WaitTimeout: 300 * time.Millisecond})

	base := env.job("ALFKI", "m1")
	otherEntity := env.job("ANATR", "m2")
	otherConnector := env.job("ALFKI", "m3")
	otherConnector.Connector = "supplier"
	otherIntegration := env.job("ALFKI", "m4")
	otherIntegration.Integration += "_other"
	composite := env.job("ALFKI", "m5")
	composite.IDFilter = append(composite.IDFilter, integer("line", 1))

	var unlocks []func()
	for _, jc := range []*jobs.Context{base, otherEntity, otherConnector, otherIntegration, composite} {
		unlocks = append(unlocks, lockFor(ctx, t, l, jc)) // while the others are held
		holders, _ := env.backends(t, jc)
		require.Len(t, holders, 1)
	}

	// Another message, attempt or operation of a held entity is the same
	// entity: it waits, here until its wait runs out.
	again := env.job("ALFKI", "m6")
	again.Attempt, again.Op = 2, jobs.OpDelete
	_, err := l.LockEntity(ctx, again)
	require.ErrorIs(t, err, jobs.ErrEntityLocked)

	for _, unlock := range unlocks {
		unlock()
	}
}

// TestAdvisoryLockerWaitTimeout: a wait that runs out is a transient error
// naming the entity; the waiter holds nothing and its connection returns
// to the pool as it was; the lock is free once its holder unlocks.
func TestAdvisoryLockerWaitTimeout(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	holder := NewAdvisoryLocker(env.pool(t, 1), LockConfig{})
	// The pools' statement_timeout (100ms) is shorter than the wait: the
	// lock statement must lift it, or the wait would end at 100ms with
	// SQLSTATE 57014.
	waiterPool := env.pool(t, 1)
	waiter := NewAdvisoryLocker(waiterPool, LockConfig{WaitTimeout: 300 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	jc := env.job("ALFKI", "m1")
	key := jobs.EntityLockKey(jc)

	unlock := lockFor(ctx, t, holder, jc)
	holders, _ := env.backends(t, jc)
	require.Len(t, holders, 1)

	_, err := waiter.LockEntity(ctx, env.job("ALFKI", "m2"))
	require.Error(t, err)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	var te *jobs.TransientError
	require.ErrorAs(t, err, &te)
	require.ErrorIs(t, err, jobs.ErrEntityLocked)
	require.ErrorContains(t, err, "another run of "+key+" holds its lock: gave up after 300ms")
	require.Equal(t, "55P03", pgCode(t, err), "ended by lock_timeout, not statement_timeout")

	// Nothing left behind: the holder alone, nobody waiting, and the
	// waiter's connection idle in its pool with its settings restored.
	env.requireHeldBy(t, jc, holders...)
	require.EqualValues(t, 1, waiterPool.Stat().TotalConns())
	requireCleanConn(t, waiterPool, "100ms")

	// Once the holder unlocks, a third run gets the lock at once.
	unlock()
	third := NewAdvisoryLocker(waiterPool, LockConfig{WaitTimeout: 300 * time.Millisecond})
	lockFor(ctx, t, third, env.job("ALFKI", "m3"))()
	env.requireHeldBy(t, jc)
}

// TestAdvisoryLockerContextDeadlineBoundsTheWait: a context deadline
// shorter than WaitTimeout ends the wait on the server before it, cleanly.
func TestAdvisoryLockerContextDeadlineBoundsTheWait(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	holder := NewAdvisoryLocker(env.pool(t, 1), LockConfig{})
	waiterPool := env.pool(t, 1)
	waiter := NewAdvisoryLocker(waiterPool, LockConfig{}) // waits up to 30s
	jc := env.job("ALFKI", "m1")

	lockFor(testCtx(t), t, holder, jc)

	ctx, cancel := context.WithTimeout(context.Background(), lockGrace+500*time.Millisecond)
	defer cancel()
	_, err := waiter.LockEntity(ctx, env.job("ALFKI", "m2"))
	require.ErrorIs(t, err, jobs.ErrEntityLocked)
	require.NoError(t, ctx.Err(), "the server gave up before the deadline")
	require.EqualValues(t, 1, waiterPool.Stat().TotalConns(), "the connection was kept")
	requireCleanConn(t, waiterPool, "100ms")
}

// TestAdvisoryLockerCancelledWait: a wait cancelled by its context closes
// its connection (whether the lock was granted is unknown) and leaves no
// lock behind.
func TestAdvisoryLockerCancelledWait(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	holder := NewAdvisoryLocker(env.pool(t, 1), LockConfig{})
	waiterPool := env.pool(t, 1)
	waiter := NewAdvisoryLocker(waiterPool, LockConfig{Logger: zaptest.NewLogger(t)})
	jc := env.job("ALFKI", "m1")

	unlock := lockFor(ctx, t, holder, jc)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	done := make(chan error, 1)
	go func() {
		_, err := waiter.LockEntity(wctx, env.job("ALFKI", "m2"))
		done <- err
	}()
	env.waitFor(t, jc, 1)
	wcancel()
	err := receive(t, done, "end of the cancelled wait")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	require.ErrorContains(t, err, "lock "+jobs.EntityLockKey(jc)+": wait interrupted")
	require.Zero(t, waiterPool.Stat().TotalConns(), "the waiting connection was closed")

	// The server ends the abandoned session: nothing holds or waits for
	// the lock once the holder unlocks, and the next run gets it.
	unlock()
	require.Eventually(t, func() bool {
		holders, waiters := env.backends(t, jc)
		return len(holders) == 0 && len(waiters) == 0
	}, 10*time.Second, 10*time.Millisecond, "the cancelled wait's session still holds or waits for the lock")
	lockFor(ctx, t, NewAdvisoryLocker(waiterPool, LockConfig{WaitTimeout: time.Second}), env.job("ALFKI", "m3"))()
}

// TestAdvisoryLockerTerminatedHolder: when the server terminates the
// holder's session, the lock is released; the holder's unlock then fails
// harmlessly and does not touch the next holder's lock.
func TestAdvisoryLockerTerminatedHolder(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	holderPool := env.pool(t, 1)
	holder := NewAdvisoryLocker(holderPool, LockConfig{Logger: zaptest.NewLogger(t)})
	next := NewAdvisoryLocker(env.pool(t, 1), LockConfig{WaitTimeout: 5 * time.Second})
	jc := env.job("ALFKI", "m1")

	unlock := lockFor(ctx, t, holder, jc)
	holders, _ := env.backends(t, jc)
	require.Len(t, holders, 1)
	var terminated bool
	require.NoError(t, env.admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", holders[0]).Scan(&terminated))
	require.True(t, terminated)

	unlockNext := lockFor(ctx, t, next, env.job("ALFKI", "m2")) // the terminated session's lock is released
	nextHolders, _ := env.backends(t, jc)
	require.Len(t, nextHolders, 1)
	require.NotEqual(t, holders[0], nextHolders[0])

	require.NotPanics(t, unlock)
	require.Zero(t, holderPool.Stat().TotalConns(), "the dead connection was destroyed, not pooled")
	env.requireHeldBy(t, jc, nextHolders...)
	unlockNext()
	env.requireHeldBy(t, jc)
}

// TestAdvisoryLockerUnlockTwice: a second unlock does nothing, even once
// another run holds the entity's lock.
func TestAdvisoryLockerUnlockTwice(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	pool := env.pool(t, 1)
	l := NewAdvisoryLocker(pool, LockConfig{})
	other := NewAdvisoryLocker(env.pool(t, 1), LockConfig{WaitTimeout: time.Second})
	jc := env.job("ALFKI", "m1")

	unlock := lockFor(ctx, t, l, jc)
	unlock()
	// The connection is back in the pool, holding nothing.
	require.EqualValues(t, 1, pool.Stat().TotalConns())
	requireCleanConn(t, pool, "100ms")
	require.NotPanics(t, unlock)

	unlockOther := lockFor(ctx, t, other, env.job("ALFKI", "m2"))
	holders, _ := env.backends(t, jc)
	require.Len(t, holders, 1)
	require.NotPanics(t, unlock)
	env.requireHeldBy(t, jc, holders...)

	// The same pool locks again; its connection stacks no old lock.
	unlockOther()
	lockFor(ctx, t, l, env.job("ALFKI", "m3"))()
	env.requireHeldBy(t, jc)
}

// TestAdvisoryLockerNoConnection: with every pool connection taken, a lock
// gives up after AcquireTimeout with a transient error naming the entity.
func TestAdvisoryLockerNoConnection(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	pool := env.pool(t, 1)
	l := NewAdvisoryLocker(pool, LockConfig{AcquireTimeout: 200 * time.Millisecond})
	jc := env.job("ALFKI", "m1")

	held, err := pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(held.Release) // a second Release does nothing
	_, err = l.LockEntity(ctx, jc)
	require.Error(t, err)
	var te *jobs.TransientError
	require.ErrorAs(t, err, &te)
	require.NotErrorIs(t, err, jobs.ErrEntityLocked)
	require.ErrorContains(t, err, "lock "+jobs.EntityLockKey(jc)+": acquire connection: timed out after 200ms (max_conns 1)")
	held.Release()

	// A context already done fails at once.
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = l.LockEntity(done, jc)
	require.ErrorIs(t, err, context.Canceled)
	env.requireHeldBy(t, jc)
}

// requireCleanConn requires pool's connection to be idle, outside a
// transaction, holding no advisory lock, with lock_timeout off and the
// pool's statement_timeout.
func requireCleanConn(t *testing.T, pool *pgxpool.Pool, statementTimeout string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.EqualValues(t, 1, pool.Stat().IdleConns())
	pc, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer pc.Release()
	require.Equal(t, byte('I'), pc.Conn().PgConn().TxStatus())
	var lockTimeout, stmtTimeout string
	var locks int
	require.NoError(t, pc.QueryRow(ctx, `SELECT current_setting('lock_timeout'), current_setting('statement_timeout'),
		(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).Scan(&lockTimeout, &stmtTimeout, &locks))
	require.Equal(t, "0", lockTimeout)
	require.Equal(t, statementTimeout, stmtTimeout)
	require.Zero(t, locks)
}

var (
	_ jobs.EntityLocker = (*AdvisoryLocker)(nil)
	_ jobs.EntityLocker = jobs.EntityLockerFunc(func(context.Context, *jobs.Context) (func(), error) { return func() {}, nil })
)

// TestAdvisoryLockerFrozenHolderLosesTheLock: a holder that does nothing
// past HoldTimeout (a SIGSTOPped worker) loses its session, and with it
// the lock, so the entity is not blocked for ever. A holder that releases
// in time leaves its pooled connection without the bound.
func TestAdvisoryLockerFrozenHolderLosesTheLock(t *testing.T) {
	t.Parallel()
	env := newLockEnv(t)
	ctx := testCtx(t)
	frozen := NewAdvisoryLocker(env.pool(t, 1), LockConfig{HoldTimeout: 300 * time.Millisecond})
	next := NewAdvisoryLocker(env.pool(t, 1), LockConfig{WaitTimeout: 10 * time.Second})
	jc := env.job("ALFKI", "m1")

	_ = lockFor(ctx, t, frozen, jc) // never unlocked: the holder froze
	holders, _ := env.backends(t, jc)
	require.Len(t, holders, 1)
	unlockNext := lockFor(ctx, t, next, env.job("ALFKI", "m2"))
	nextHolders, _ := env.backends(t, jc)
	require.Len(t, nextHolders, 1)
	require.NotEqual(t, holders[0], nextHolders[0], "the frozen session was ended by the server")
	unlockNext()

	pool := env.pool(t, 1)
	prompt := NewAdvisoryLocker(pool, LockConfig{HoldTimeout: time.Hour})
	lockFor(ctx, t, prompt, env.job("ANATR", "m3"))()
	pc, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer pc.Release()
	var idle string
	require.NoError(t, pc.QueryRow(ctx, "SELECT current_setting('idle_session_timeout')").Scan(&idle))
	require.Equal(t, "0", idle, "a released lock's connection goes back to the pool without the bound")
}
