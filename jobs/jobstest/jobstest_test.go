package jobstest_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/jobs/jobstest"
)

// memoryRemote is a correct writer's remote: entities by id.
type memoryRemote struct {
	mu       sync.Mutex
	entities map[string]map[string]any
}

func (m *memoryRemote) writer() jobs.Writer {
	return jobs.WriterFunc(func(_ context.Context, _ *jobs.Context, items []jobs.Item) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, it := range items {
			id, _ := it.Key.Value("id")
			switch it.Op {
			case jobs.OpDelete:
				delete(m.entities, id.(string))
			default:
				m.entities[id.(string)] = maps.Clone(it.Fields)
			}
		}
		return nil
	})
}

func (m *memoryRemote) get(_ *testing.T, key jobs.IDFilter) (map[string]any, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, _ := key.Value("id")
	e, ok := m.entities[id.(string)]
	return maps.Clone(e), ok
}

func TestRunWriterConformance(t *testing.T) {
	t.Parallel()
	remote := &memoryRemote{entities: map[string]map[string]any{}}
	jobstest.RunWriterConformance(t, jobstest.WriterHarness{
		NewWriter: func(*testing.T) jobs.Writer { return remote.writer() },
		Get:       remote.get,
	})
}

func TestFakesInARun(t *testing.T) {
	t.Parallel()
	items := []jobs.Item{
		{Key: jobs.IDFilter{{Column: "id", Value: "1"}}, Op: jobs.OpUpsert, Fields: map[string]any{"n": 1}},
		{Key: jobs.IDFilter{{Column: "id", Value: "2"}}, Op: jobs.OpUpsert, Fields: map[string]any{"n": 2}},
		{Key: jobs.IDFilter{{Column: "id", Value: "3"}}, Op: jobs.OpUpsert, Fields: map[string]any{"n": 3}},
	}
	r := &jobstest.Reader{Items: items}
	p := &jobstest.Processor{ProcessFunc: func(_ context.Context, _ *jobs.Context, it jobs.Item) (jobs.Item, bool, error) {
		return it, it.Fields["n"] != 2, nil
	}}
	w := &jobstest.Writer{}
	route := jobstest.NewRoute(r, p, w, 1)
	jc := &jobs.Context{Integration: "test", Connector: "entity", MessageID: "m1", Op: jobs.OpUpsert}
	exec, err := new(jobs.Runner).Run(context.Background(), route, jc)
	require.NoError(t, err)
	read, written, skipped := exec.Counts()
	require.Equal(t, []int{3, 2, 1}, []int{read, written, skipped})

	require.Len(t, r.Calls(), 1)
	require.Equal(t, "m1", r.Calls()[0].MessageID)
	require.Len(t, p.Items(), 3)
	require.Len(t, w.Batches(), 2, "batch size 1")
	require.Equal(t, []jobs.Item{items[0], items[2]}, w.Items())

	// The recorded items are copies.
	w.Items()[0].Fields["n"] = 99
	require.Equal(t, 1, w.Items()[0].Fields["n"])
}

func TestFakeErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	ctx := context.Background()

	_, err := (&jobstest.Reader{Err: boom}).Read(ctx, &jobs.Context{})
	require.ErrorIs(t, err, boom)

	w := &jobstest.Writer{Err: boom}
	require.ErrorIs(t, w.Write(ctx, &jobs.Context{}, []jobs.Item{{}}), boom)
	require.Empty(t, w.Batches(), "a failed batch is not recorded")

	w = &jobstest.Writer{WriteFunc: func(context.Context, *jobs.Context, []jobs.Item) error { return jobs.Permanent(boom) }}
	err = w.Write(ctx, &jobs.Context{}, nil)
	require.True(t, jobs.IsPermanent(err))

	route := jobstest.NewRoute(&jobstest.Reader{Items: []jobs.Item{{}}}, nil, w, 0)
	require.Empty(t, route.Steps[0].Step.Processor)
	require.Equal(t, jobs.DefaultBatchSize, route.Steps[0].Step.Parameters.BatchSize)
	_, err = new(jobs.Runner).Run(ctx, route, &jobs.Context{})
	require.ErrorIs(t, err, boom)
}
