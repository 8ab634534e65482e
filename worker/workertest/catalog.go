package workertest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/revsync/revsync/jobs"
)

// The routes of Catalog.
const (
	// Integration is the enabled integration of Catalog.
	Integration = "crm"
	// Customer is a connector of Integration keyed by customer_id (text).
	Customer = "customer"
	// OrderLine is a connector of Integration keyed by order_id and
	// product_id (integers).
	OrderLine = "order_line"
	// Dormant is a disabled integration with a Customer connector.
	Dormant = "dormant"
	// Job is the name of the export job every connector runs.
	Job = "export"
)

// Catalog returns a jobs.Catalog whose every connector runs one job, Job,
// with a single step reading with reader and writing with writer:
// integration Integration with connectors Customer and OrderLine, and the
// disabled integration Dormant with connector Customer.
func Catalog(t testing.TB, reader jobs.Reader, writer jobs.Writer) *jobs.Catalog {
	t.Helper()
	off := false
	return CatalogOf(t, reader, writer,
		jobs.Integration{Name: Integration, Connectors: []jobs.Connector{CustomerConnector(), OrderLineConnector()}},
		jobs.Integration{Name: Dormant, Enabled: &off, Connectors: []jobs.Connector{CustomerConnector()}},
	)
}

// CustomerConnector returns Catalog's Customer connector: table
// public.customers keyed by customer_id (text), running Job.
func CustomerConnector() jobs.Connector {
	return jobs.Connector{
		Name: Customer, ExportJob: Job,
		Entity:     jobs.Entity{Table: "public.customers", Key: []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}}},
		Parameters: map[string]any{"source": "config", "dry_run": false},
	}
}

// OrderLineConnector returns Catalog's OrderLine connector: table
// public.order_lines keyed by order_id and product_id (integers), running
// Job.
func OrderLineConnector() jobs.Connector {
	return jobs.Connector{
		Name: OrderLine, ExportJob: Job,
		Entity: jobs.Entity{Table: "public.order_lines", Key: []jobs.KeyColumn{
			{Column: "order_id", Type: jobs.KeyInteger}, {Column: "product_id", Type: jobs.KeyInteger},
		}},
	}
}

// CatalogOf returns a jobs.Catalog of the integrations whose every
// connector runs Job (their ExportJob must be Job), a single step reading
// with reader and writing with writer.
func CatalogOf(t testing.TB, reader jobs.Reader, writer jobs.Writer, integrations ...jobs.Integration) *jobs.Catalog {
	t.Helper()
	reg := &jobs.Registry{}
	reg.RegisterReader("fake", func(*jobs.Binding) (jobs.Reader, error) { return reader, nil })
	reg.RegisterWriter("fake", func(*jobs.Binding) (jobs.Writer, error) { return writer, nil })
	jobList, err := jobs.ParseJobs("jobs.yaml", []byte(`
jobs:
  - name: `+Job+`
    type: export
    steps:
      - {name: export, reader: fake, writer: fake}
`))
	if err != nil {
		t.Fatalf("workertest: parse jobs: %v", err)
	}
	cat, err := jobs.NewCatalog("revsync.yaml", reg, jobList, integrations)
	if err != nil {
		t.Fatalf("workertest: catalog: %v", err)
	}
	t.Cleanup(func() { _ = cat.Close() })
	return cat
}

// EchoReader is a reader returning one item holding the job context's
// identifier, as an entity-by-ID reader finding the row would.
var EchoReader = jobs.ReaderFunc(func(_ context.Context, jc *jobs.Context) ([]jobs.Item, error) {
	fields := map[string]any{}
	for _, p := range jc.IDFilter {
		fields[p.Column] = p.Value
	}
	return []jobs.Item{{Key: jc.IDFilter, Op: jc.Op, Fields: fields}}, nil
})

// Body returns a valid version 1 event body for the integration's
// connector and identifier, op upsert.
func Body(integration, connector string, id map[string]any) []byte {
	b, err := json.Marshal(map[string]any{
		"version":     1,
		"integration": integration,
		"connector":   connector,
		"id":          id,
		"op":          "upsert",
		"occurred_at": time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC).Format(time.RFC3339),
	})
	if err != nil {
		panic(fmt.Sprintf("workertest: %v", err))
	}
	return b
}

// CustomerBody returns a valid event body for Integration's Customer
// connector with customer_id id.
func CustomerBody(id string) []byte {
	return Body(Integration, Customer, map[string]any{"customer_id": id})
}
