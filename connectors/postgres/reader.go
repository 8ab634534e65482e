package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/revsync/revsync/jobs"
)

// ReaderName is the service name the entity-by-ID reader is registered
// under in job definitions.
const ReaderName = "entity_by_id"

// DefaultQueryTimeout bounds one Read when ReaderConfig.QueryTimeout is zero.
const DefaultQueryTimeout = 10 * time.Second

// ReaderConfig configures the entity-by-ID readers ReaderFactory builds.
type ReaderConfig struct {
	// QueryTimeout bounds one Read as a whole: waiting for a connection,
	// preparing, running the query and reading the row. Default 10s.
	QueryTimeout time.Duration
	// AcquireTimeout bounds the wait for a free pool connection, within
	// QueryTimeout. Give it the pool's Config.AcquireTimeout. Default 5s.
	AcquireTimeout time.Duration
	// Logger receives the reader's debug and info messages (a missing row,
	// a retry after a lost connection); failures are returned, not logged.
	// Default zap.NewNop().
	Logger *zap.Logger
}

func (cfg ReaderConfig) withDefaults() (ReaderConfig, error) {
	switch {
	case cfg.QueryTimeout < 0:
		return cfg, fmt.Errorf("postgres: ReaderConfig.QueryTimeout: must not be negative, got %s", cfg.QueryTimeout)
	case cfg.AcquireTimeout < 0:
		return cfg, fmt.Errorf("postgres: ReaderConfig.AcquireTimeout: must not be negative, got %s", cfg.AcquireTimeout)
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.AcquireTimeout == 0 {
		cfg.AcquireTimeout = DefaultAcquireTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg, nil
}

// EntityByIDReader reads the one row a job context's ID filter names. It
// implements jobs.Reader and is safe for concurrent use.
//
// It always reads the row, whatever the event's op, because events may be
// repeated, reordered or coalesced: the row's current state decides what
// is exported. When the row exists it returns one upsert item whose Fields
// are the row by column name; for a delete event it also notes with
// jc.Warn that the event was superseded by the row's current state (the
// row was created again after the delete, or the delete is a stale or
// replayed event). When the row is gone, a delete event returns one
// deletion item whose Fields are the key columns, whatever on_missing
// says; an upsert returns, as on_missing says, a deletion item ("delete")
// or no item ("skip"), and notes it with jc.Warn.
//
// Column values are converted to plain Go values that encode to JSON
// without surprises: NULL → nil; text → string; every integer type → int64
// (like integer key values); double precision → float64; real → float64
// holding the shortest decimal of the float32 (a stored 0.15 reads as
// 0.15, not 0.15000000596046448); numeric → json.Number with the exact
// decimal text and scale ("12.50"), which encodes as a JSON number without
// float rounding and is a string for processors that format decimals
// (NaN and ±Infinity, not JSON numbers, become the strings "NaN",
// "Infinity", "-Infinity"); date and timestamps → time.Time, except
// 'infinity' and '-infinity', which have no time.Time and become the
// strings "infinity" and "-infinity"; bytea →
// []byte; uuid → canonical string; json/jsonb as decoded; arrays → []any
// of converted elements; other types (interval, time…) → their text form.
type EntityByIDReader struct {
	pool      *pgxpool.Pool
	table     string   // as configured, for errors and logs
	keys      []string // identifier columns, in key order
	onMissing string
	sql       string // built once; identifiers quoted, values as $n
	cfg       ReaderConfig
}

var _ jobs.Reader = (*EntityByIDReader)(nil)

// NewEntityByIDReader builds a reader of entity's table on pool. onMissing
// is jobs.OnMissingDelete (also for "") or jobs.OnMissingSkip. The SELECT is
// rendered here, once: the listed columns (all columns when
// entity.Columns is empty) of the schema-qualified table, one equality per
// key column bound to $1, $2… in key order, and LIMIT 2 so that a key
// matching several rows is detected without reading them all.
func NewEntityByIDReader(pool *pgxpool.Pool, entity jobs.Entity, onMissing string, cfg ReaderConfig) (*EntityByIDReader, error) {
	if pool == nil {
		return nil, errors.New("postgres: entity_by_id reader: nil pool")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	switch onMissing {
	case "":
		onMissing = jobs.OnMissingDelete
	case jobs.OnMissingDelete, jobs.OnMissingSkip:
	default:
		return nil, fmt.Errorf(`on_missing: want %q or %q, got %q`, jobs.OnMissingDelete, jobs.OnMissingSkip, onMissing)
	}
	schema, table := entity.SchemaTable()
	if table == "" {
		return nil, errors.New(`entity.table: missing`)
	}
	if len(entity.Key) == 0 {
		return nil, errors.New(`entity.key: missing: at least one identifier column`)
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	if len(entity.Columns) == 0 {
		b.WriteString("*")
	}
	for i, c := range entity.Columns {
		if c == "" {
			return nil, fmt.Errorf("entity.columns[%d]: empty column name", i)
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c}.Sanitize())
	}
	b.WriteString(" FROM ")
	if schema != "" {
		b.WriteString(pgx.Identifier{schema, table}.Sanitize())
	} else {
		b.WriteString(pgx.Identifier{table}.Sanitize())
	}
	keys := make([]string, len(entity.Key))
	for i, k := range entity.Key {
		if k.Column == "" {
			return nil, fmt.Errorf("entity.key[%d].column: missing", i)
		}
		if slices.Contains(keys[:i], k.Column) {
			return nil, fmt.Errorf("entity.key[%d].column: duplicate column %q", i, k.Column)
		}
		keys[i] = k.Column
		if i == 0 {
			b.WriteString(" WHERE ")
		} else {
			b.WriteString(" AND ")
		}
		fmt.Fprintf(&b, "%s = $%d", pgx.Identifier{k.Column}.Sanitize(), i+1)
	}
	b.WriteString(" LIMIT 2")
	return &EntityByIDReader{
		pool:      pool,
		table:     entity.Table,
		keys:      keys,
		onMissing: onMissing,
		sql:       b.String(),
		cfg:       cfg,
	}, nil
}

// ReaderFactory returns the factory of the entity_by_id reader: for each
// binding it builds an EntityByIDReader of the connector's entity and
// on_missing setting on pool. Configuration errors name the file,
// integration and connector.
func ReaderFactory(pool *pgxpool.Pool, cfg ReaderConfig) jobs.ReaderFactory {
	return func(b *jobs.Binding) (jobs.Reader, error) {
		r, err := NewEntityByIDReader(pool, b.Connector.Entity, b.Connector.OnMissing, cfg)
		if err != nil {
			return nil, b.Errorf("reader %q: %v", ReaderName, err)
		}
		return r, nil
	}
}

// SQL returns the statement the reader runs.
func (r *EntityByIDReader) SQL() string { return r.sql }

// Read implements jobs.Reader; see EntityByIDReader. Errors name the table
// and key and are classified: jobs.Permanent for what a retry meets again
// (undefined table or column, a key value that does not fit its column, a
// key matching several rows, an ID filter that does not match the key),
// retryable for the rest (timeouts, lost connections, an exhausted pool).
func (r *EntityByIDReader) Read(ctx context.Context, jc *jobs.Context) ([]jobs.Item, error) {
	args, err := r.keyArgs(jc.IDFilter)
	if err != nil {
		return nil, jobs.PermanentClass(jobs.ClassInvalidMessage, fmt.Errorf("read %s %v: %w", r.table, jc.IDFilter, err))
	}
	if !jc.Op.Valid() {
		return nil, jobs.PermanentClass(jobs.ClassInvalidMessage, fmt.Errorf("read %s %v: unknown op %q", r.table, jc.IDFilter, jc.Op))
	}
	key := slices.Clone(jc.IDFilter)

	// Whatever the event says, the row decides: events may be repeated,
	// reordered or coalesced, so a delete may arrive after the row was
	// created again, and an upsert after the row was deleted.
	ctx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
	defer cancel()
	fields, err := r.readRow(ctx, args)
	if err != nil {
		return nil, classify(fmt.Errorf("read %s %v: %w", r.table, jc.IDFilter, err))
	}
	log := r.cfg.Logger.With(zap.String("table", r.table), zap.Stringer("entity_key", jc.IDFilter), zap.String("op", string(jc.Op)))
	if fields != nil {
		if jc.Op == jobs.OpDelete {
			log.Debug("delete event superseded: the row exists, exporting its current state")
			jc.Warn("delete event for %s %v superseded: the row exists, exporting its current state", r.table, jc.IDFilter)
		}
		return []jobs.Item{{Key: key, Op: jobs.OpUpsert, Fields: fields}}, nil
	}
	if jc.Op == jobs.OpDelete {
		// The event and the row agree: the entity is gone. on_missing is
		// about upserts whose row vanished; it does not apply here.
		return []jobs.Item{r.deletion(key, args)}, nil
	}

	log = log.With(zap.String("on_missing", r.onMissing))
	if r.onMissing == jobs.OnMissingSkip {
		log.Debug("row not found: skipped")
		jc.Warn("row %s %v not found: skipped (on_missing %s)", r.table, jc.IDFilter, r.onMissing)
		return nil, nil
	}
	log.Debug("row not found: exporting a deletion")
	jc.Warn("row %s %v not found: exporting a deletion (on_missing %s)", r.table, jc.IDFilter, r.onMissing)
	return []jobs.Item{r.deletion(key, args)}, nil
}

// keyArgs returns the ID filter's values in key order, the bind parameters.
func (r *EntityByIDReader) keyArgs(f jobs.IDFilter) ([]any, error) {
	if len(f) != len(r.keys) {
		return nil, fmt.Errorf("identifier has columns %v, want %v", f.Columns(), r.keys)
	}
	args := make([]any, len(r.keys))
	for i, col := range r.keys {
		v, ok := f.Value(col)
		if !ok {
			return nil, fmt.Errorf("identifier has columns %v, want %v", f.Columns(), r.keys)
		}
		switch v.(type) {
		case string, int64:
		default:
			return nil, fmt.Errorf("identifier column %q: want a string or int64, got %T", col, v)
		}
		args[i] = v
	}
	return args, nil
}

// deletion is the item exporting the deletion of key.
func (r *EntityByIDReader) deletion(key jobs.IDFilter, args []any) jobs.Item {
	fields := make(map[string]any, len(r.keys))
	for i, col := range r.keys {
		fields[col] = args[i]
	}
	return jobs.Item{Key: key, Op: jobs.OpDelete, Fields: fields}
}

// readRow runs the query and returns the row, or nil when there is none.
// Like database/sql with driver.ErrBadConn, it runs the query a second time,
// on another connection, when the first attempt failed because its
// connection was dead (the server restarted or terminated the backend since
// the connection was last used): a SELECT is safe to repeat.
func (r *EntityByIDReader) readRow(ctx context.Context, args []any) (map[string]any, error) {
	fields, closed, err := r.readOnce(ctx, args)
	if err != nil && closed && ctx.Err() == nil {
		r.cfg.Logger.Info("postgres connection lost during read, retrying on another connection",
			zap.String("table", r.table), zap.Error(err))
		fields, _, err = r.readOnce(ctx, args)
	}
	return fields, err
}

// readOnce runs the query on one pool connection. closed reports whether
// that connection is dead afterwards. A prepared statement the server
// refuses with SQLSTATE 0A000 ("cached plan must not change result type":
// the table's columns changed since it was prepared) is prepared again and
// run once more on the same connection.
func (r *EntityByIDReader) readOnce(ctx context.Context, args []any) (fields map[string]any, closed bool, err error) {
	pc, err := Acquire(ctx, r.pool, r.cfg.AcquireTimeout)
	if err != nil {
		return nil, false, err
	}
	defer pc.Release()
	conn := pc.Conn()
	fields, err = r.query(ctx, conn, args)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "0A000" && !conn.IsClosed() {
		if derr := conn.Deallocate(ctx, r.sql); derr == nil {
			r.cfg.Logger.Debug("postgres prepared statement refused, preparing it again",
				zap.String("table", r.table), zap.Error(err))
			fields, err = r.query(ctx, conn, args)
		}
	}
	return fields, conn.IsClosed(), err
}

// query prepares the statement on conn (once per connection), checks that
// every key value fits its column's type, runs it and returns the row, or
// nil when there is none.
func (r *EntityByIDReader) query(ctx context.Context, conn *pgx.Conn, args []any) (map[string]any, error) {
	sd, err := conn.Prepare(ctx, r.sql, r.sql)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if len(sd.ParamOIDs) != len(args) {
		return nil, jobs.Permanent(fmt.Errorf("statement has %d parameters, want %d", len(sd.ParamOIDs), len(args)))
	}
	// Encode each key value for its column's type before sending it: pgx
	// reports a value that does not fit (70000 for a smallint) with an
	// untyped error; here it is known to be permanent.
	tm := conn.TypeMap()
	for i, oid := range sd.ParamOIDs {
		if _, err := tm.Encode(oid, tm.FormatCodeForOID(oid), args[i], nil); err != nil {
			return nil, jobs.Permanent(fmt.Errorf("key column %q: value does not fit the column's type: %w", r.keys[i], err))
		}
	}

	rows, err := conn.Query(ctx, r.sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	values, err := rows.Values()
	if err != nil {
		return nil, err
	}
	fds := rows.FieldDescriptions()
	fields := make(map[string]any, len(values))
	for i, v := range values {
		fields[fds[i].Name] = fieldValue(v)
	}
	if rows.Next() {
		return nil, jobs.Permanent(errors.New("the key matches more than one row: the connector's key columns must identify one row"))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return fields, nil
}

// Acquire takes a connection from pool, waiting at most timeout (and no
// longer than ctx allows). pgx has no acquire timeout of its own; every
// service of this package acquires through here. When no connection frees
// up in time the error is a *jobs.TransientError naming the wait and the
// pool size. The caller releases the connection.
func Acquire(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) (*pgxpool.Conn, error) {
	if timeout <= 0 {
		timeout = DefaultAcquireTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pool.Acquire(actx)
	if err == nil {
		return conn, nil
	}
	if ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return nil, &jobs.TransientError{Err: fmt.Errorf("acquire connection: timed out after %s (max_conns %d): %w",
			timeout, pool.Config().MaxConns, err)}
	}
	return nil, fmt.Errorf("acquire connection: %w", err)
}
