package jobs

import "context"

// Item is one entity flowing through a step. The reader fills Key, Op and
// Fields (the row, by column); a processor replaces Fields with what the
// remote expects; the writer sends it.
type Item struct {
	Key    IDFilter
	Op     Op
	Fields map[string]any
}

// Reader loads the entities the job context selects, normally the one row
// named by its ID filter.
type Reader interface {
	Read(ctx context.Context, jc *Context) ([]Item, error)
}

// Processor turns an item into what the remote expects. It returns keep=false
// to filter the item out; the step counts it as skipped.
type Processor interface {
	Process(ctx context.Context, jc *Context, item Item) (out Item, keep bool, err error)
}

// Writer pushes a batch of processed items to the remote system. Writing the
// same item twice must leave the remote as writing it once: redelivery,
// retry and replay all repeat writes.
type Writer interface {
	Write(ctx context.Context, jc *Context, items []Item) error
}

// ReaderFunc adapts a function to a Reader.
type ReaderFunc func(ctx context.Context, jc *Context) ([]Item, error)

// Read calls f.
func (f ReaderFunc) Read(ctx context.Context, jc *Context) ([]Item, error) { return f(ctx, jc) }

// ProcessorFunc adapts a function to a Processor.
type ProcessorFunc func(ctx context.Context, jc *Context, item Item) (Item, bool, error)

// Process calls f.
func (f ProcessorFunc) Process(ctx context.Context, jc *Context, item Item) (Item, bool, error) {
	return f(ctx, jc, item)
}

// WriterFunc adapts a function to a Writer.
type WriterFunc func(ctx context.Context, jc *Context, items []Item) error

// Write calls f.
func (f WriterFunc) Write(ctx context.Context, jc *Context, items []Item) error {
	return f(ctx, jc, items)
}

// Closer is an optional interface for services that hold resources; the
// catalog calls Close when it is closed.
type Closer interface {
	Close() error
}

var (
	_ Reader    = ReaderFunc(nil)
	_ Processor = ProcessorFunc(nil)
	_ Writer    = WriterFunc(nil)
)
