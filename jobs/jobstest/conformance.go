package jobstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

// WriterHarness connects RunWriterConformance to one jobs.Writer
// implementation and the remote it writes to.
//
// The suite's entities have one key column, "id" (text), and an upsert's
// Fields are {"id", "name", "city", "version"}; a deletion's Fields hold only
// "id", as the mapping processor leaves them. The writer must address an
// entity by "id". Every run uses fresh ids, so one remote can serve many
// runs.
type WriterHarness struct {
	// NewWriter returns a writer to test. It is called once per case;
	// release what it holds with t.Cleanup.
	NewWriter func(t *testing.T) jobs.Writer
	// Get reads back the entity named by key from the remote, and whether
	// it exists.
	Get func(t *testing.T, key jobs.IDFilter) (map[string]any, bool)
	// Timeout bounds each Write call. Default 10s.
	Timeout time.Duration
}

// RunWriterConformance checks that the harness's writer creates, updates and
// deletes entities, that writing the same item again leaves the remote as it
// was, that deleting a missing entity succeeds, and that a batch is written
// in order.
func RunWriterConformance(t *testing.T, h WriterHarness) {
	t.Helper()
	require.NotNil(t, h.NewWriter, "WriterHarness.NewWriter")
	require.NotNil(t, h.Get, "WriterHarness.Get")
	c := &conformance{h: h, run: randomHex(4)}
	if c.h.Timeout == 0 {
		c.h.Timeout = 10 * time.Second
	}

	t.Run("create", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "a")
		c.write(t, w, e.upsert(1))
		c.requireState(t, e, 1)
	})
	t.Run("write twice is idempotent", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "a")
		item := e.upsert(1)
		msgID := "conformance-" + randomHex(8)
		c.writeMessage(t, w, msgID, item)
		first, ok := h.Get(t, e.key)
		require.True(t, ok, "entity %s missing after the first write", e.key)
		c.writeMessage(t, w, msgID, item) // a redelivery: same message, same item
		second, ok := h.Get(t, e.key)
		require.True(t, ok, "entity %s missing after the second write", e.key)
		require.Equal(t, normalize(t, first), normalize(t, second), "writing the same item twice changed the remote")
	})
	t.Run("update changes the entity", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "a")
		c.write(t, w, e.upsert(1))
		c.write(t, w, e.upsert(2))
		c.requireState(t, e, 2)
	})
	t.Run("delete removes the entity", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "a")
		c.write(t, w, e.upsert(1))
		c.write(t, w, e.delete())
		c.requireGone(t, e)
	})
	t.Run("delete of a missing entity succeeds", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "never-created")
		c.write(t, w, e.delete())
		c.requireGone(t, e)
		c.write(t, w, e.delete())
		c.requireGone(t, e)
	})
	t.Run("empty batch", func(t *testing.T) {
		c.write(t, h.NewWriter(t))
	})
	t.Run("batch is written in order", func(t *testing.T) {
		w := h.NewWriter(t)
		a, b, d := c.entity(t, "a"), c.entity(t, "b"), c.entity(t, "d")
		c.write(t, w, d.upsert(1))
		c.write(t, w, a.upsert(1), b.upsert(1), a.upsert(2), d.delete(), b.upsert(3))
		c.requireState(t, a, 2)
		c.requireState(t, b, 3)
		c.requireGone(t, d)
	})
	t.Run("delete then recreate", func(t *testing.T) {
		w, e := h.NewWriter(t), c.entity(t, "a")
		c.write(t, w, e.upsert(1), e.delete(), e.upsert(2))
		c.requireState(t, e, 2)
	})
}

type conformance struct {
	h   WriterHarness
	run string // random, so that runs against one remote do not collide
	seq int
}

// entity is one entity of a case.
type entity struct {
	id  string
	key jobs.IDFilter
}

func (c *conformance) entity(t *testing.T, name string) entity {
	c.seq++
	id := fmt.Sprintf("rs-%s-%d-%s", c.run, c.seq, name)
	return entity{id: id, key: jobs.IDFilter{{Column: "id", Value: id}}}
}

// fields is the entity's state at a version.
func (e entity) fields(version int) map[string]any {
	return map[string]any{
		"id":      e.id,
		"name":    fmt.Sprintf("Entity %s v%d", e.id, version),
		"city":    []string{"Berlin", "México D.F.", "London"}[version%3],
		"version": version,
	}
}

func (e entity) upsert(version int) jobs.Item {
	return jobs.Item{Key: e.key, Op: jobs.OpUpsert, Fields: e.fields(version)}
}

func (e entity) delete() jobs.Item {
	return jobs.Item{Key: e.key, Op: jobs.OpDelete, Fields: map[string]any{"id": e.id}}
}

// write writes one batch as a job run for a new message would, and
// requires success.
func (c *conformance) write(t *testing.T, w jobs.Writer, items ...jobs.Item) {
	t.Helper()
	c.writeMessage(t, w, "conformance-"+randomHex(8), items...)
}

// writeMessage writes one batch as the run of message msgID would.
func (c *conformance) writeMessage(t *testing.T, w jobs.Writer, msgID string, items ...jobs.Item) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.h.Timeout)
	defer cancel()
	jc := &jobs.Context{
		Integration: "conformance", Connector: "entity", Job: "export", Entity: "entity",
		Op: jobs.OpUpsert, MessageID: msgID, Attempt: 1,
	}
	if len(items) > 0 {
		jc.IDFilter, jc.Op = items[0].Key, items[0].Op
	}
	require.NoError(t, w.Write(ctx, jc, CloneItems(items)))
}

// requireState requires the remote to hold the entity's fields at version;
// fields the remote adds of its own are ignored.
func (c *conformance) requireState(t *testing.T, e entity, version int) {
	t.Helper()
	got, ok := c.h.Get(t, e.key)
	require.True(t, ok, "entity %s is not on the remote", e.key)
	want := normalize(t, e.fields(version))
	have := normalize(t, got)
	for k, v := range want {
		require.Equal(t, v, have[k], "entity %s field %q", e.key, k)
	}
}

func (c *conformance) requireGone(t *testing.T, e entity) {
	t.Helper()
	got, ok := c.h.Get(t, e.key)
	require.False(t, ok, "entity %s is still on the remote: %v", e.key, got)
}

// normalize round-trips v through JSON so that values compare as the remote
// sees them (numbers as float64, and so on).
func normalize(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out))
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
