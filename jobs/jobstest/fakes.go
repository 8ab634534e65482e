package jobstest

import (
	"context"
	"maps"
	"sync"

	"github.com/revsync/revsync/jobs"
)

// Reader is a fake jobs.Reader. Read calls ReadFunc when it is set and
// otherwise returns Items and Err. It records every job context it is
// called with. Set the fields before use; it is safe for concurrent reads.
type Reader struct {
	ReadFunc func(ctx context.Context, jc *jobs.Context) ([]jobs.Item, error)
	Items    []jobs.Item
	Err      error

	mu    sync.Mutex
	calls []jobs.Context
}

// Read records the call and returns what the fake is programmed to.
func (r *Reader) Read(ctx context.Context, jc *jobs.Context) ([]jobs.Item, error) {
	r.mu.Lock()
	r.calls = append(r.calls, *jc)
	r.mu.Unlock()
	if r.ReadFunc != nil {
		return r.ReadFunc(ctx, jc)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	return CloneItems(r.Items), nil
}

// Calls returns copies of the job contexts Read was called with, in order.
func (r *Reader) Calls() []jobs.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]jobs.Context(nil), r.calls...)
}

// Processor is a fake jobs.Processor. Process calls ProcessFunc when it is
// set and otherwise passes the item through, kept. It records every item
// it is given.
type Processor struct {
	ProcessFunc func(ctx context.Context, jc *jobs.Context, item jobs.Item) (jobs.Item, bool, error)

	mu    sync.Mutex
	items []jobs.Item
}

// Process records the item and returns what the fake is programmed to.
func (p *Processor) Process(ctx context.Context, jc *jobs.Context, item jobs.Item) (jobs.Item, bool, error) {
	p.mu.Lock()
	p.items = append(p.items, CloneItem(item))
	p.mu.Unlock()
	if p.ProcessFunc != nil {
		return p.ProcessFunc(ctx, jc, item)
	}
	return item, true, nil
}

// Items returns copies of the items Process was given, in order.
func (p *Processor) Items() []jobs.Item {
	p.mu.Lock()
	defer p.mu.Unlock()
	return CloneItems(p.items)
}

// Writer is a fake jobs.Writer. Write calls WriteFunc when it is set and
// otherwise returns Err. Batches it did not fail are recorded (copied: the
// runner reuses its batch slice).
type Writer struct {
	WriteFunc func(ctx context.Context, jc *jobs.Context, items []jobs.Item) error
	Err       error

	mu      sync.Mutex
	batches [][]jobs.Item
}

// Write records the batch, unless it fails, and returns what the fake is
// programmed to.
func (w *Writer) Write(ctx context.Context, jc *jobs.Context, items []jobs.Item) error {
	err := w.Err
	if w.WriteFunc != nil {
		err = w.WriteFunc(ctx, jc, items)
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.batches = append(w.batches, CloneItems(items))
	w.mu.Unlock()
	return nil
}

// Batches returns the successfully written batches, in order.
func (w *Writer) Batches() [][]jobs.Item {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][]jobs.Item, len(w.batches))
	for i, b := range w.batches {
		out[i] = CloneItems(b)
	}
	return out
}

// Items returns every successfully written item, in order.
func (w *Writer) Items() []jobs.Item {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []jobs.Item
	for _, b := range w.batches {
		out = append(out, CloneItems(b)...)
	}
	return out
}

var (
	_ jobs.Reader    = (*Reader)(nil)
	_ jobs.Processor = (*Processor)(nil)
	_ jobs.Writer    = (*Writer)(nil)
)

// CloneItem copies an item's key and its top-level fields, so that later
// changes to the original do not show in the copy.
func CloneItem(it jobs.Item) jobs.Item {
	it.Key = append(jobs.IDFilter(nil), it.Key...)
	if it.Fields != nil {
		it.Fields = maps.Clone(it.Fields)
	}
	return it
}

// CloneItems copies items with CloneItem.
func CloneItems(items []jobs.Item) []jobs.Item {
	if items == nil {
		return nil
	}
	out := make([]jobs.Item, len(items))
	for i, it := range items {
		out[i] = CloneItem(it)
	}
	return out
}

// NewRoute returns a route of one integration ("test"), one connector
// ("entity") and a one-step export job ("export") running reader, processor
// (nil: none) and writer, with batch size batchSize (0: the default).
func NewRoute(reader jobs.Reader, processor jobs.Processor, writer jobs.Writer, batchSize int) *jobs.Route {
	if batchSize == 0 {
		batchSize = jobs.DefaultBatchSize
	}
	job := &jobs.Job{
		Name: "export",
		Type: jobs.JobTypeExport,
		Steps: []jobs.Step{{
			Name: "export", Reader: "reader", Processor: "processor", Writer: "writer",
			Parameters: jobs.StepParameters{BatchSize: batchSize},
		}},
	}
	if processor == nil {
		job.Steps[0].Processor = ""
	}
	in := &jobs.Integration{
		Name: "test",
		Connectors: []jobs.Connector{{
			Name:      "entity",
			ExportJob: job.Name,
			OnMissing: jobs.OnMissingDelete,
			Entity:    jobs.Entity{Table: "entity", Key: []jobs.KeyColumn{{Column: "id", Type: jobs.KeyText}}},
		}},
	}
	return &jobs.Route{
		Integration: in,
		Connector:   &in.Connectors[0],
		Job:         job,
		Steps:       []jobs.RouteStep{{Step: &job.Steps[0], Reader: reader, Processor: processor, Writer: writer}},
	}
}
