package postgres

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/revsync/revsync/connectors/postgres/pgtest"
	"github.com/revsync/revsync/jobs"
)

// testPool returns a pool on url with cfg, closed when t ends.
func testPool(t *testing.T, url string, cfg Config) *pgxpool.Pool {
	t.Helper()
	cfg.URL = url
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := NewPool(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func newReader(t *testing.T, pool *pgxpool.Pool, e jobs.Entity, onMissing string, cfg ReaderConfig) *EntityByIDReader {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	r, err := NewEntityByIDReader(pool, e, onMissing, cfg)
	require.NoError(t, err)
	return r
}

func jobContext(op jobs.Op, key ...jobs.KeyPart) *jobs.Context {
	return &jobs.Context{Integration: "northwind_crm", Connector: "test", IDFilter: key, Op: op}
}

func text(col, v string) jobs.KeyPart          { return jobs.KeyPart{Column: col, Value: v} }
func integer(col string, v int64) jobs.KeyPart { return jobs.KeyPart{Column: col, Value: v} }

func read(t *testing.T, r jobs.Reader, jc *jobs.Context) ([]jobs.Item, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.Read(ctx, jc)
}

// runReader runs r as the only step of a job, to see the step's warnings.
func runReader(t *testing.T, r jobs.Reader, jc *jobs.Context) (*jobs.Execution, []jobs.Item) {
	t.Helper()
	var written []jobs.Item
	route := &jobs.Route{
		Job: &jobs.Job{Name: "rest_export"},
		Steps: []jobs.RouteStep{{
			Step:   &jobs.Step{Name: "export", Reader: ReaderName, Writer: "capture"},
			Reader: r,
			Writer: jobs.WriterFunc(func(_ context.Context, _ *jobs.Context, items []jobs.Item) error {
				written = append(written, items...)
				return nil
			}),
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exec, err := (&jobs.Runner{}).Run(ctx, route, jc)
	require.NoError(t, err)
	return exec, written
}

func pgCode(t *testing.T, err error) string {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	return pgErr.Code
}

func TestEntityByIDReaderNorthwind(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	nw := pgtest.LoadNorthwind(t, url)
	pool := testPool(t, url, Config{})
	customers := jobs.Entity{Table: nw + ".customers", Key: []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}}}
	orderDetails := jobs.Entity{
		Table: nw + ".order_details",
		Key:   []jobs.KeyColumn{{Column: "order_id", Type: jobs.KeyInteger}, {Column: "product_id", Type: jobs.KeyInteger}},
	}

	t.Run("text key, all columns", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, customers, "", ReaderConfig{})
		require.Equal(t, `SELECT * FROM "`+nw+`"."customers" WHERE "customer_id" = $1 LIMIT 2`, r.SQL())
		items, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "ALFKI")))
		require.NoError(t, err)
		require.Equal(t, []jobs.Item{{
			Key: jobs.IDFilter{text("customer_id", "ALFKI")},
			Op:  jobs.OpUpsert,
			Fields: map[string]any{
				"customer_id":   "ALFKI",
				"company_name":  "Alfreds Futterkiste",
				"contact_name":  "Maria Anders",
				"contact_title": "Sales Representative",
				"address":       "Obere Str. 57",
				"city":          "Berlin",
				"region":        nil,
				"postal_code":   "12209",
				"country":       "Germany",
				"phone":         "030-0074321",
				"fax":           "030-0076545",
			},
		}}, items)
	})

	t.Run("selected columns", func(t *testing.T) {
		t.Parallel()
		e := customers
		e.Columns = []string{"customer_id", "company_name", "city"}
		r := newReader(t, pool, e, "", ReaderConfig{})
		require.Equal(t, `SELECT "customer_id", "company_name", "city" FROM "`+nw+`"."customers" WHERE "customer_id" = $1 LIMIT 2`, r.SQL())
		items, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "ALFKI")))
		require.NoError(t, err)
		require.Len(t, items, 1)
		require.Equal(t, map[string]any{"customer_id": "ALFKI", "company_name": "Alfreds Futterkiste", "city": "Berlin"}, items[0].Fields)
	})

	t.Run("composite integer key on smallint columns", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, orderDetails, "", ReaderConfig{})
		require.Equal(t, `SELECT * FROM "`+nw+`"."order_details" WHERE "order_id" = $1 AND "product_id" = $2 LIMIT 2`, r.SQL())
		items, err := read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 10248), integer("product_id", 11)))
		require.NoError(t, err)
		require.Len(t, items, 1)
		require.Equal(t, jobs.OpUpsert, items[0].Op)
		require.Equal(t, jobs.IDFilter{integer("order_id", 10248), integer("product_id", 11)}, items[0].Key)
		require.Equal(t, map[string]any{
			"order_id": int64(10248), "product_id": int64(11),
			"unit_price": 14.0, "quantity": int64(12), "discount": 0.0,
		}, items[0].Fields)

		// real columns come out as the decimals that were stored.
		items, err = read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 10250), integer("product_id", 51)))
		require.NoError(t, err)
		require.Len(t, items, 1)
		require.Equal(t, 42.4, items[0].Fields["unit_price"])
		require.Equal(t, 0.15, items[0].Fields["discount"])
		b, err := json.Marshal(items[0].Fields)
		require.NoError(t, err)
		require.JSONEq(t, `{"order_id":10250,"product_id":51,"unit_price":42.4,"quantity":35,"discount":0.15}`, string(b))
	})

	t.Run("filter order does not matter", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, orderDetails, "", ReaderConfig{})
		items, err := read(t, r, jobContext(jobs.OpUpsert, integer("product_id", 11), integer("order_id", 10248)))
		require.NoError(t, err)
		require.Len(t, items, 1)
		require.Equal(t, int64(12), items[0].Fields["quantity"])
	})

	t.Run("missing row, on_missing delete", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, customers, jobs.OnMissingDelete, ReaderConfig{})
		jc := jobContext(jobs.OpUpsert, text("customer_id", "NOONE"))
		items, err := read(t, r, jc)
		require.NoError(t, err)
		require.Equal(t, []jobs.Item{{
			Key:    jobs.IDFilter{text("customer_id", "NOONE")},
			Op:     jobs.OpDelete,
			Fields: map[string]any{"customer_id": "NOONE"},
		}}, items)

		exec, written := runReader(t, r, jobContext(jobs.OpUpsert, text("customer_id", "NOONE")))
		require.Equal(t, items, written)
		require.Len(t, exec.Steps[0].Warnings, 1)
		require.Contains(t, exec.Steps[0].Warnings[0], "customer_id=NOONE not found: exporting a deletion")
	})

	t.Run("missing row, on_missing delete, composite key", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, orderDetails, "", ReaderConfig{})
		items, err := read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 10248), integer("product_id", 1)))
		require.NoError(t, err)
		require.Len(t, items, 1)
		require.Equal(t, jobs.OpDelete, items[0].Op)
		require.Equal(t, map[string]any{"order_id": int64(10248), "product_id": int64(1)}, items[0].Fields)
	})

	t.Run("missing row, on_missing skip", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, customers, jobs.OnMissingSkip, ReaderConfig{})
		items, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "NOONE")))
		require.NoError(t, err)
		require.Empty(t, items)

		exec, written := runReader(t, r, jobContext(jobs.OpUpsert, text("customer_id", "NOONE")))
		require.Empty(t, written)
		require.Zero(t, exec.Steps[0].Read)
		require.Len(t, exec.Steps[0].Warnings, 1)
		require.Contains(t, exec.Steps[0].Warnings[0], "skipped")
	})

	t.Run("op delete of an existing row exports its current state", func(t *testing.T) {
		t.Parallel()
		// A reordered or replayed delete must not remove at the remote an
		// entity whose row exists: the row wins, whatever on_missing says.
		for _, onMissing := range []string{jobs.OnMissingDelete, jobs.OnMissingSkip} {
			r := newReader(t, pool, orderDetails, onMissing, ReaderConfig{})
			jc := jobContext(jobs.OpDelete, integer("order_id", 10248), integer("product_id", 11))
			items, err := read(t, r, jc)
			require.NoError(t, err, onMissing)
			require.Equal(t, []jobs.Item{{
				Key: jobs.IDFilter{integer("order_id", 10248), integer("product_id", 11)},
				Op:  jobs.OpUpsert,
				Fields: map[string]any{
					"order_id": int64(10248), "product_id": int64(11),
					"unit_price": 14.0, "quantity": int64(12), "discount": 0.0,
				},
			}}, items, onMissing)

			exec, written := runReader(t, r, jobContext(jobs.OpDelete, integer("order_id", 10248), integer("product_id", 11)))
			require.Equal(t, items, written, onMissing)
			require.Len(t, exec.Steps[0].Warnings, 1, onMissing)
			require.Contains(t, exec.Steps[0].Warnings[0], "delete event for "+nw+".order_details order_id=10248,product_id=11 superseded", onMissing)
		}
	})

	t.Run("op delete of a missing row exports a deletion, whatever on_missing says", func(t *testing.T) {
		t.Parallel()
		for _, onMissing := range []string{jobs.OnMissingDelete, jobs.OnMissingSkip} {
			r := newReader(t, pool, orderDetails, onMissing, ReaderConfig{})
			exec, written := runReader(t, r, jobContext(jobs.OpDelete, integer("order_id", 10248), integer("product_id", 1)))
			require.Equal(t, []jobs.Item{{
				Key:    jobs.IDFilter{integer("order_id", 10248), integer("product_id", 1)},
				Op:     jobs.OpDelete,
				Fields: map[string]any{"order_id": int64(10248), "product_id": int64(1)},
			}}, written, onMissing)
			require.Empty(t, exec.Steps[0].Warnings, "an explicit delete of a missing row is the expected case: %s", onMissing)
		}
	})

	t.Run("op delete queries the row", func(t *testing.T) {
		t.Parallel()
		// A table that does not exist: only a query finds out.
		r := newReader(t, pool, jobs.Entity{Table: nw + ".no_such_table", Key: orderDetails.Key}, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpDelete, integer("order_id", 10248), integer("product_id", 11)))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "%v", err)
		require.Equal(t, "42P01", pgCode(t, err))
	})

	t.Run("unknown op is an invalid message", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, customers, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.Op("merge"), text("customer_id", "ALFKI")))
		require.Equal(t, jobs.ClassInvalidMessage, jobs.ClassOf(err), "%v", err)
		require.ErrorContains(t, err, `unknown op "merge"`)
	})

	t.Run("hostile values stay values", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, customers, jobs.OnMissingSkip, ReaderConfig{})
		for _, v := range []string{
			`ALFKI' OR '1'='1`,
			`x"; DROP TABLE customers; --`,
			`ALFKI'; DROP TABLE customers; --`,
			`' OR 1=1 --`,
			`$1`,
		} {
			items, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", v)))
			require.NoError(t, err, v)
			require.Empty(t, items, v)
		}
		var n int
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{nw, "customers"}.Sanitize()).Scan(&n))
		require.Equal(t, 91, n)
	})

	t.Run("undefined table is permanent", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, jobs.Entity{Table: nw + ".no_such_table", Key: customers.Key}, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "ALFKI")))
		require.Error(t, err)
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err))
		require.Equal(t, "42P01", pgCode(t, err))
		require.ErrorContains(t, err, "read "+nw+".no_such_table customer_id=ALFKI: ")
	})

	t.Run("undefined schema is permanent", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, jobs.Entity{Table: "no_such_schema_x.customers", Key: customers.Key}, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "ALFKI")))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err))
	})

	t.Run("undefined column is permanent", func(t *testing.T) {
		t.Parallel()
		e := customers
		e.Columns = []string{"customer_id", "no_such_column"}
		r := newReader(t, pool, e, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, text("customer_id", "ALFKI")))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err))
		require.Equal(t, "42703", pgCode(t, err))
	})

	t.Run("key value out of smallint range is permanent", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, orderDetails, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 70000), integer("product_id", 11)))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "%v", err)
		require.ErrorContains(t, err, `key column "order_id"`)
		// The connection is still usable.
		items, err := read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 10248), integer("product_id", 11)))
		require.NoError(t, err)
		require.Len(t, items, 1)
	})

	t.Run("text value for an integer column is permanent", func(t *testing.T) {
		t.Parallel()
		e := orderDetails
		e.Key = []jobs.KeyColumn{{Column: "order_id", Type: jobs.KeyText}, {Column: "product_id", Type: jobs.KeyInteger}}
		r := newReader(t, pool, e, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, text("order_id", "ten"), integer("product_id", 11)))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "%v", err)
	})

	t.Run("identifier not matching the key is an invalid message", func(t *testing.T) {
		t.Parallel()
		r := newReader(t, pool, orderDetails, "", ReaderConfig{})
		for _, key := range []jobs.IDFilter{
			{integer("order_id", 10248)},
			{integer("order_id", 10248), integer("other", 11)},
			{integer("order_id", 10248), {Column: "product_id", Value: 1.5}},
		} {
			_, err := read(t, r, jobContext(jobs.OpUpsert, key...))
			require.Equal(t, jobs.ClassInvalidMessage, jobs.ClassOf(err), "%v", key)
			_, err = read(t, r, jobContext(jobs.OpDelete, key...))
			require.Equal(t, jobs.ClassInvalidMessage, jobs.ClassOf(err), "%v", key)
		}
	})

	t.Run("a key matching several rows is permanent", func(t *testing.T) {
		t.Parallel()
		e := orderDetails
		e.Key = []jobs.KeyColumn{{Column: "order_id", Type: jobs.KeyInteger}}
		r := newReader(t, pool, e, "", ReaderConfig{})
		_, err := read(t, r, jobContext(jobs.OpUpsert, integer("order_id", 10248)))
		require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err))
		require.ErrorContains(t, err, "more than one row")
	})
}

// TestEntityByIDReaderQuotingAndTypes reads a table and columns whose names
// are reserved words and mixed case, with a value of every common type.
func TestEntityByIDReaderQuotingAndTypes(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	conn := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, `
CREATE TABLE `+schema+`."Order" (
	"Select" integer PRIMARY KEY,
	"from" text NOT NULL,
	"MixedCase" varchar(10),
	amount numeric(10,2),
	ratio real,
	big bigint,
	at timestamptz,
	day date,
	id uuid,
	doc jsonb,
	tags text[],
	raw bytea,
	flag boolean
);
INSERT INTO `+schema+`."Order" VALUES (7, 'where', 'Yes', 12.50, 0.25, 9007199254740993,
	'2026-12-03 15:00:00+00', '2026-12-03', '123e4567-e89b-12d3-a456-426614174000',
	'{"a": [1, "b"]}', ARRAY['x', 'y'], '\x0102', true);`)
	require.NoError(t, err)

	pool := testPool(t, url, Config{})
	e := jobs.Entity{
		Table:   schema + ".Order",
		Key:     []jobs.KeyColumn{{Column: "Select", Type: jobs.KeyInteger}},
		Columns: []string{"Select", "from", "MixedCase", "amount", "ratio", "big", "at", "day", "id", "doc", "tags", "raw", "flag"},
	}
	r := newReader(t, pool, e, "", ReaderConfig{})
	require.Equal(t, `SELECT "Select", "from", "MixedCase", "amount", "ratio", "big", "at", "day", "id", "doc", "tags", "raw", "flag" FROM "`+schema+`"."Order" WHERE "Select" = $1 LIMIT 2`, r.SQL())
	items, err := read(t, r, jobContext(jobs.OpUpsert, integer("Select", 7)))
	require.NoError(t, err)
	require.Len(t, items, 1)
	f := items[0].Fields
	require.Equal(t, int64(7), f["Select"])
	require.Equal(t, "where", f["from"])
	require.Equal(t, "Yes", f["MixedCase"])
	require.Equal(t, json.Number("12.50"), f["amount"])
	require.Equal(t, 0.25, f["ratio"])
	require.Equal(t, int64(9007199254740993), f["big"])
	require.True(t, time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC).Equal(f["at"].(time.Time)))
	require.Equal(t, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), f["day"])
	require.Equal(t, "123e4567-e89b-12d3-a456-426614174000", f["id"])
	require.Equal(t, map[string]any{"a": []any{1.0, "b"}}, f["doc"])
	require.Equal(t, []any{"x", "y"}, f["tags"])
	require.Equal(t, []byte{1, 2}, f["raw"])
	require.Equal(t, true, f["flag"])

	// All columns: the names come from the result.
	e.Columns = nil
	r = newReader(t, pool, e, "", ReaderConfig{})
	items, err = read(t, r, jobContext(jobs.OpUpsert, integer("Select", 7)))
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Equal(t, f, items[0].Fields)
}

// TestEntityByIDReaderInfiniteTimes: 'infinity' and '-infinity' in date,
// timestamp and timestamptz columns (and arrays of them) read as the
// strings PostgreSQL prints, not as pgx's modifiers 1 and -1.
func TestEntityByIDReaderInfiniteTimes(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	conn := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, `
CREATE TABLE `+schema+`.t (id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, days date[]);
INSERT INTO `+schema+`.t VALUES
	(1, 'infinity', 'infinity', 'infinity', ARRAY['infinity', '2026-12-03', '-infinity']::date[]),
	(2, '-infinity', '-infinity', '-infinity', NULL);`)
	require.NoError(t, err)

	pool := testPool(t, url, Config{})
	r := newReader(t, pool, jobs.Entity{Table: schema + ".t", Key: []jobs.KeyColumn{{Column: "id", Type: jobs.KeyInteger}}}, "", ReaderConfig{})
	items, err := read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Equal(t, map[string]any{
		"id": int64(1), "d": "infinity", "ts": "infinity", "tstz": "infinity",
		"days": []any{"infinity", time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), "-infinity"},
	}, items[0].Fields)

	items, err = read(t, r, jobContext(jobs.OpUpsert, integer("id", 2)))
	require.NoError(t, err)
	require.Len(t, items, 1)
	b, err := json.Marshal(items[0].Fields)
	require.NoError(t, err)
	require.JSONEq(t, `{"id": 2, "d": "-infinity", "ts": "-infinity", "tstz": "-infinity", "days": null}`, string(b))
}

// TestEntityByIDReaderColumnsChange: a "SELECT *" prepared before a
// column is added keeps working and returns the new column.
func TestEntityByIDReaderColumnsChange(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	conn := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oneRow := createOneRowTable(ctx, t, conn, schema)

	pool := testPool(t, url, Config{MaxConns: 1})
	r := newReader(t, pool, oneRow, "", ReaderConfig{})
	items, err := read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"id": int64(1), "v": "one"}, items[0].Fields)

	_, err = conn.Exec(ctx, `ALTER TABLE `+schema+`.t ADD COLUMN w int DEFAULT 5`)
	require.NoError(t, err)
	items, err = read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"id": int64(1), "v": "one", "w": int64(5)}, items[0].Fields)
}

// TestEntityByIDReaderStatementTimeout: a read blocked by another
// transaction's lock is cancelled by the server's statement_timeout and
// is transient.
func TestEntityByIDReaderStatementTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	locker := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oneRow := createOneRowTable(ctx, t, locker, schema)

	pool := testPool(t, url, Config{StatementTimeout: 200 * time.Millisecond})
	r := newReader(t, pool, oneRow, "", ReaderConfig{})
	_, err := read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.NoError(t, err)

	tx, err := locker.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // released below; this is for a failed assertion
	_, err = tx.Exec(ctx, `LOCK TABLE `+schema+`.t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	start := time.Now()
	_, err = read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err), "%v", err)
	require.Equal(t, "57014", pgCode(t, err))

	require.NoError(t, tx.Rollback(ctx))
	items, err := read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.NoError(t, err)
	require.Len(t, items, 1)
}

// TestEntityByIDReaderQueryTimeout: the client-side QueryTimeout bounds a
// read the server lets run (statement_timeout longer), and is transient.
func TestEntityByIDReaderQueryTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	conn := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, `CREATE VIEW `+schema+`.slow AS SELECT 1 AS id, pg_sleep(30)::text AS v`)
	require.NoError(t, err)

	pool := testPool(t, url, Config{})
	r := newReader(t, pool, jobs.Entity{Table: schema + ".slow", Key: []jobs.KeyColumn{{Column: "id", Type: jobs.KeyInteger}}}, "",
		ReaderConfig{QueryTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err = read(t, r, jobContext(jobs.OpUpsert, integer("id", 1)))
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err), "%v", err)
}

// TestEntityByIDReaderTerminatedBackend: after the server terminates the
// pool's connection, the next read succeeds on a new connection or fails
// transiently, and the one after succeeds.
func TestEntityByIDReaderTerminatedBackend(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.NewSchema(t, url, "rs")
	admin := pgtest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	oneRow := createOneRowTable(ctx, t, admin, schema)

	pool := testPool(t, url, Config{MaxConns: 1})
	r := newReader(t, pool, oneRow, "", ReaderConfig{})
	jc := jobContext(jobs.OpUpsert, integer("id", 1))

	for round := range 3 {
		_, err := read(t, r, jc)
		require.NoError(t, err, "round %d", round)

		pc, err := pool.Acquire(ctx)
		require.NoError(t, err)
		pid := pc.Conn().PgConn().PID()
		pc.Release()

		var ok bool
		require.NoError(t, admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok))
		require.True(t, ok)
		require.Eventually(t, func() bool {
			var n int
			return admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n) == nil && n == 0
		}, 5*time.Second, 10*time.Millisecond, "backend %d still there", pid)

		items, err := read(t, r, jc)
		if err != nil {
			require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err), "round %d: %v", round, err)
			t.Logf("round %d: read after terminate failed transiently: %v", round, err)
		} else {
			require.Len(t, items, 1)
		}
		items, err = read(t, r, jc)
		require.NoError(t, err, "round %d", round)
		require.Len(t, items, 1)
	}
}

// TestEntityByIDReaderAcquireTimeout: with every connection held, a read
// gives up after AcquireTimeout with a transient error.
func TestEntityByIDReaderAcquireTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	nw := pgtest.LoadNorthwind(t, url)
	pool := testPool(t, url, Config{MaxConns: 1})
	r := newReader(t, pool, jobs.Entity{Table: nw + ".customers", Key: []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}}}, "",
		ReaderConfig{AcquireTimeout: 200 * time.Millisecond})
	jc := jobContext(jobs.OpUpsert, text("customer_id", "ALFKI"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held, err := pool.Acquire(ctx)
	require.NoError(t, err)

	start := time.Now()
	_, err = read(t, r, jc)
	elapsed := time.Since(start)
	require.Error(t, err)
	require.Less(t, elapsed, 3*time.Second)
	require.GreaterOrEqual(t, elapsed, 150*time.Millisecond)
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err))
	var te *jobs.TransientError
	require.ErrorAs(t, err, &te)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "read "+nw+".customers customer_id=ALFKI: acquire connection: timed out after 200ms (max_conns 1)")

	held.Release()
	items, err := read(t, r, jc)
	require.NoError(t, err)
	require.Len(t, items, 1)
}

func TestReaderFactory(t *testing.T) {
	t.Parallel()
	// A lazy pool on an address nothing listens on: building readers does
	// not touch the database.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := NewPool(ctx, Config{URL: "postgres://app:pw@127.0.0.1:1/app", Lazy: true})
	require.NoError(t, err)
	defer pool.Close()

	binding := func(c jobs.Connector) *jobs.Binding {
		return &jobs.Binding{File: "revsync.yaml", Integration: &jobs.Integration{Name: "northwind_crm"}, Connector: &c}
	}
	factory := ReaderFactory(pool, ReaderConfig{})

	r, err := factory(binding(jobs.Connector{
		Name:      "customer",
		OnMissing: jobs.OnMissingSkip,
		Entity: jobs.Entity{
			Table:   "northwind.customers",
			Key:     []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}},
			Columns: []string{"customer_id", "company_name"},
		},
	}))
	require.NoError(t, err)
	er := r.(*EntityByIDReader)
	require.Equal(t, `SELECT "customer_id", "company_name" FROM "northwind"."customers" WHERE "customer_id" = $1 LIMIT 2`, er.SQL())
	require.Equal(t, jobs.OnMissingSkip, er.onMissing)

	r, err = factory(binding(jobs.Connector{Name: "plain", Entity: jobs.Entity{Table: "customers", Key: []jobs.KeyColumn{{Column: "id"}}}}))
	require.NoError(t, err)
	require.Equal(t, `SELECT * FROM "customers" WHERE "id" = $1 LIMIT 2`, r.(*EntityByIDReader).SQL())
	require.Equal(t, jobs.OnMissingDelete, r.(*EntityByIDReader).onMissing)

	for name, c := range map[string]jobs.Connector{
		"on_missing":           {Name: "bad", OnMissing: "ignore", Entity: jobs.Entity{Table: "t", Key: []jobs.KeyColumn{{Column: "id"}}}},
		"entity.table":         {Name: "bad", Entity: jobs.Entity{Key: []jobs.KeyColumn{{Column: "id"}}}},
		"entity.key":           {Name: "bad", Entity: jobs.Entity{Table: "t"}},
		"entity.key[1].column": {Name: "bad", Entity: jobs.Entity{Table: "t", Key: []jobs.KeyColumn{{Column: "id"}, {Column: "id"}}}},
	} {
		_, err := factory(binding(c))
		require.ErrorContains(t, err, name, name)
		var de *jobs.DefinitionError
		require.ErrorAs(t, err, &de, name)
		require.Contains(t, err.Error(), `revsync.yaml: integration "northwind_crm" connector "bad"`)
	}
	_, err = NewEntityByIDReader(nil, jobs.Entity{Table: "t", Key: []jobs.KeyColumn{{Column: "id"}}}, "", ReaderConfig{})
	require.ErrorContains(t, err, "nil pool")
}

// createOneRowTable creates schema.t (id int, v text) holding (1, 'one')
// and returns its entity, keyed by id.
func createOneRowTable(ctx context.Context, t *testing.T, conn *pgx.Conn, schema string) jobs.Entity {
	t.Helper()
	_, err := conn.Exec(ctx, `CREATE TABLE `+schema+`.t (id int PRIMARY KEY, v text); INSERT INTO `+schema+`.t VALUES (1, 'one')`)
	require.NoError(t, err)
	return jobs.Entity{Table: schema + ".t", Key: []jobs.KeyColumn{{Column: "id", Type: jobs.KeyInteger}}}
}
