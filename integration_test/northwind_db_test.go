package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// northwind is the Northwind database loaded into a test's own schema.
type northwind struct {
	Schema string
	Pool   *pgxpool.Pool
}

// loadNorthwind loads the Northwind dump (env NORTHWIND_SQL, default
// ../shared/datasets/northwind.sql next to the repository) into a new,
// uniquely named schema that is dropped at cleanup.
func loadNorthwind(t *testing.T, databaseURL string) *northwind {
	t.Helper()
	path := os.Getenv("NORTHWIND_SQL")
	if path == "" {
		path = filepath.Join(repoRoot, "..", "shared", "datasets", "northwind.sql")
	}
	requireFixture(t, path, "set NORTHWIND_SQL to the Northwind PostgreSQL dump")
	dump, err := os.ReadFile(path)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, databaseURL)
	require.NoError(t, err, "connect to PostgreSQL")
	t.Cleanup(pool.Close)

	nw := &northwind{Schema: "rs_it_" + uniqueSuffix(t), Pool: pool}
	schema := pgx.Identifier{nw.Schema}.Sanitize()
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err, "create schema")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", nw.Schema, err)
		}
	})

	// The dump names no schema: run it with search_path set to ours alone,
	// so its DROP TABLE IF EXISTS statements cannot touch anything else.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SET search_path TO "+schema)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, string(dump)) // no arguments: simple protocol, many statements
	require.NoError(t, err, "load %s into schema %s", path, nw.Schema)
	_, err = conn.Exec(ctx, "RESET ALL")
	require.NoError(t, err)
	return nw
}

// Table returns the schema-qualified, quoted name of table.
func (nw *northwind) Table(table string) string {
	return pgx.Identifier{nw.Schema, table}.Sanitize()
}

// Exec runs one statement with a deadline.
func (nw *northwind) Exec(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tag, err := nw.Pool.Exec(ctx, sql, args...)
	require.NoError(t, err, sql)
	return tag.RowsAffected()
}

// orderLineKey is the composite key of an order_details row.
type orderLineKey struct {
	OrderID   int64
	ProductID int64
}

// CustomerIDs returns every customer id, in order.
func (nw *northwind) CustomerIDs(t *testing.T) []string {
	t.Helper()
	return nw.strings(t, `SELECT customer_id FROM `+nw.Table("customers")+` ORDER BY customer_id`)
}

// CustomersWithoutOrders returns the customers nothing references.
func (nw *northwind) CustomersWithoutOrders(t *testing.T) []string {
	t.Helper()
	return nw.strings(t, `SELECT customer_id FROM `+nw.Table("customers")+` c
		WHERE NOT EXISTS (SELECT 1 FROM `+nw.Table("orders")+` o WHERE o.customer_id = c.customer_id)
		  AND NOT EXISTS (SELECT 1 FROM `+nw.Table("customer_customer_demo")+` d WHERE d.customer_id = c.customer_id)
		ORDER BY customer_id`)
}

func (nw *northwind) strings(t *testing.T, sql string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := nw.Pool.Query(ctx, sql)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// OrderLineKeys returns the keys of the first n order lines.
func (nw *northwind) OrderLineKeys(t *testing.T, n int) []orderLineKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := nw.Pool.Query(ctx, `SELECT order_id, product_id FROM `+nw.Table("order_details")+`
		ORDER BY order_id, product_id LIMIT $1`, n)
	require.NoError(t, err)
	var keys []orderLineKey
	for rows.Next() {
		var k orderLineKey
		require.NoError(t, rows.Scan(&k.OrderID, &k.ProductID))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	return keys
}

// ExpectedCustomers is the customers collection the remote should hold:
// the customer mapping of the configuration applied to every row.
func (nw *northwind) ExpectedCustomers(t *testing.T) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := nw.Pool.Query(ctx, `SELECT customer_id, company_name, contact_name, city, country, phone
		FROM `+nw.Table("customers"))
	require.NoError(t, err)
	want := map[string]any{}
	for rows.Next() {
		var id, name string
		var contact, city, country, phone *string
		require.NoError(t, rows.Scan(&id, &name, &contact, &city, &country, &phone))
		want[id] = asJSON(t, map[string]any{
			"id":      id,
			"name":    name,
			"contact": map[string]any{"name": contact, "phone": phone},
			"address": map[string]any{"city": city, "country": country},
			"source":  "northwind",
		})
	}
	require.NoError(t, rows.Err())
	return want
}

// ExpectedOrderLines is the order_lines collection the remote should hold
// for the given keys: the order_line mapping applied to their rows.
func (nw *northwind) ExpectedOrderLines(t *testing.T, keys []orderLineKey) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := map[string]any{}
	for _, k := range keys {
		var unitPrice, discount float32
		var quantity int64
		err := nw.Pool.QueryRow(ctx, `SELECT unit_price, quantity, discount FROM `+nw.Table("order_details")+`
			WHERE order_id = $1 AND product_id = $2`, k.OrderID, k.ProductID).Scan(&unitPrice, &quantity, &discount)
		require.NoError(t, err, "order line %+v", k)
		id := fmt.Sprintf("%d-%d", k.OrderID, k.ProductID)
		want[id] = asJSON(t, map[string]any{
			"id":         id,
			"order_id":   k.OrderID,
			"product_id": k.ProductID,
			"unit_price": decimal(unitPrice, 2),
			"quantity":   quantity,
			"discount":   decimal(discount, 2),
		})
	}
	return want
}

// decimal renders a PostgreSQL real as the mapping's decimal format does:
// the float4's shortest decimal form (9.80000019 is 9.8), rounded half away
// from zero to scale digits.
func decimal(f float32, scale int) json.Number {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(float64(f), 'f', -1, 32))
	if !ok {
		panic(fmt.Sprintf("decimal %v", f))
	}
	return json.Number(r.FloatString(scale))
}

// asJSON round-trips v through JSON, giving it the shape a decoded remote
// response has (numbers are float64).
func asJSON(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(data, &out))
	return out
}

// diffItems describes how got differs from want, both keyed by id; "" when
// they are equal.
func diffItems(want, got map[string]any) string {
	var missing, extra, differ []string
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case !reflect.DeepEqual(w, g):
			wj, _ := json.Marshal(w)
			gj, _ := json.Marshal(g)
			differ = append(differ, fmt.Sprintf("%s: want %s, got %s", id, wj, gj))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra)+len(differ) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(differ)
	first := func(s []string) []string { return s[:min(len(s), 3)] }
	return fmt.Sprintf("%d items (want %d): %d missing %v, %d unexpected %v, %d differ %v",
		len(got), len(want), len(missing), first(missing), len(extra), first(extra), len(differ), first(differ))
}

// subsetOf returns the entries of want whose key is in ids.
func subsetOf(want map[string]any, ids []string) map[string]any {
	out := make(map[string]any, len(ids))
	for _, id := range ids {
		if v, ok := want[id]; ok {
			out[id] = v
		}
	}
	return out
}
