package jobs_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/revsync/revsync/jobs"
)

// A custom writer is a WriterFactory registered under a name that job
// definitions use. This one prints what it would send; a reader stands in
// for the database.
func Example_customWriter() {
	var reg jobs.Registry
	reg.RegisterReader("demo_rows", func(*jobs.Binding) (jobs.Reader, error) {
		return jobs.ReaderFunc(func(_ context.Context, jc *jobs.Context) ([]jobs.Item, error) {
			id, _ := jc.IDFilter.Value("customer_id")
			row := map[string]any{"customer_id": id, "company_name": "Alfreds Futterkiste"}
			return []jobs.Item{{Key: jc.IDFilter, Op: jc.Op, Fields: row}}, nil
		}), nil
	})
	reg.RegisterProcessor("shout", func(*jobs.Binding) (jobs.Processor, error) {
		return jobs.ProcessorFunc(func(_ context.Context, _ *jobs.Context, item jobs.Item) (jobs.Item, bool, error) {
			name, _ := item.Fields["company_name"].(string)
			item.Fields = map[string]any{"id": item.Fields["customer_id"], "name": strings.ToUpper(name)}
			return item, true, nil
		}), nil
	})
	reg.RegisterWriter("stdout", func(b *jobs.Binding) (jobs.Writer, error) {
		integration := b.Integration.Name
		return jobs.WriterFunc(func(_ context.Context, jc *jobs.Context, items []jobs.Item) error {
			for _, it := range items {
				fmt.Printf("%s: %s %v %v (message %s)\n", integration, it.Op, it.Key, it.Fields, jc.MessageID)
			}
			return nil
		}), nil
	})

	defs, err := jobs.ParseJobs("jobs.yaml", []byte(`
jobs:
  - name: print_export
    title: Print an entity instead of exporting it
    type: export
    steps:
      - name: export
        reader: demo_rows
        processor: shout
        writer: stdout
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	integrations := []jobs.Integration{{
		Name: "crm",
		Connectors: []jobs.Connector{{
			Name:      "customer",
			ExportJob: "print_export",
			Entity: jobs.Entity{
				Table: "northwind.customers",
				Key:   []jobs.KeyColumn{{Column: "customer_id", Type: jobs.KeyText}},
			},
		}},
	}}
	catalog, err := jobs.NewCatalog("revsync.yaml", &reg, defs, integrations)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer catalog.Close()

	// What the worker does for an event {"integration": "crm",
	// "connector": "customer", "id": {"customer_id": "ALFKI"}, "op": "upsert"}.
	route, err := catalog.Resolve("crm", "customer")
	if err != nil {
		fmt.Println(err)
		return
	}
	filter, err := route.Connector.Entity.IDFilter(map[string]any{"customer_id": "ALFKI"})
	if err != nil {
		fmt.Println(err)
		return
	}
	jc := &jobs.Context{
		Integration: "crm", Connector: "customer", IDFilter: filter,
		Op: jobs.OpUpsert, MessageID: "m-1", Attempt: 1,
	}
	exec, err := new(jobs.Runner).Run(context.Background(), route, jc)
	if err != nil {
		fmt.Println(err)
		return
	}
	read, written, skipped := exec.Counts()
	fmt.Printf("%s: read %d, written %d, skipped %d\n", exec.Status, read, written, skipped)
	// Output:
	// crm: upsert customer_id=ALFKI map[id:ALFKI name:ALFREDS FUTTERKISTE] (message m-1)
	// completed: read 1, written 1, skipped 0
}
