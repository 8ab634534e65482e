package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

// route builds a one-step route from funcs.
func route(batchSize int, r jobs.Reader, p jobs.Processor, w jobs.Writer) *jobs.Route {
	step := &jobs.Step{Name: "export", Reader: "r", Processor: "p", Writer: "w", Parameters: jobs.StepParameters{BatchSize: batchSize}}
	return &jobs.Route{
		Job:   &jobs.Job{Name: "job", Steps: []jobs.Step{*step}},
		Steps: []jobs.RouteStep{{Step: step, Reader: r, Processor: p, Writer: w}},
	}
}

func items(n int) jobs.ReaderFunc {
	return func(context.Context, *jobs.Context) ([]jobs.Item, error) {
		out := make([]jobs.Item, n)
		for i := range out {
			out[i] = jobs.Item{Op: jobs.OpUpsert, Fields: map[string]any{"n": i}}
		}
		return out, nil
	}
}

func TestRunnerBatchesAndCounts(t *testing.T) {
	t.Parallel()
	var batches []int
	w := jobs.WriterFunc(func(_ context.Context, _ *jobs.Context, items []jobs.Item) error {
		batches = append(batches, len(items))
		return nil
	})
	skipOdd := jobs.ProcessorFunc(func(_ context.Context, jc *jobs.Context, it jobs.Item) (jobs.Item, bool, error) {
		if it.Fields["n"].(int)%2 == 1 {
			return it, false, nil
		}
		jc.Warn("kept %d", it.Fields["n"])
		return it, true, nil
	})
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), route(2, items(7), skipOdd, w), &jobs.Context{})
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, exec.Status)
	require.Equal(t, []int{2, 2}, batches, "4 kept items in batches of 2")
	read, written, skipped := exec.Counts()
	require.Equal(t, [3]int{7, 4, 3}, [3]int{read, written, skipped})
	require.Len(t, exec.Steps, 1)
	s := exec.Steps[0]
	require.Equal(t, jobs.StatusCompleted, s.Status)
	require.Equal(t, []string{"kept 0", "kept 2", "kept 4", "kept 6"}, s.Warnings)
	require.False(t, s.Started.IsZero())
	require.False(t, s.Ended.Before(s.Started))
	require.Equal(t, "job", exec.Job)
}

func TestRunnerStopsAtTheFailingStep(t *testing.T) {
	t.Parallel()
	boom := jobs.Permanent(errors.New("remote said 400"))
	var calls int
	w := jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	})
	second := &jobs.Step{Name: "second", Reader: "r", Writer: "w"}
	rt := route(1, items(3), nil, w)
	rt.Steps = append(rt.Steps, jobs.RouteStep{Step: second, Reader: items(1), Writer: w})
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), rt, &jobs.Context{})
	require.ErrorIs(t, err, boom)
	require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "the class survives the wrapping")
	require.Equal(t, jobs.RoleWriter, jobs.FailedRole(err))
	require.Contains(t, err.Error(), `job "job" step "export"`)
	require.Equal(t, jobs.StatusFailed, exec.Status)
	require.Len(t, exec.Steps, 1, "the second step never ran")
	require.Equal(t, 1, exec.Steps[0].Written, "the first batch was written before the failure")
	require.Equal(t, jobs.StatusFailed, exec.Steps[0].Status)
}

func TestRunnerMarksTheFailingRole(t *testing.T) {
	t.Parallel()
	fail := errors.New("down")
	var runner jobs.Runner
	_, err := runner.Run(t.Context(), route(1, jobs.ReaderFunc(func(context.Context, *jobs.Context) ([]jobs.Item, error) {
		return nil, fail
	}), nil, jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error { return nil })), &jobs.Context{})
	require.ErrorIs(t, err, fail)
	require.Equal(t, jobs.RoleReader, jobs.FailedRole(err))
	require.Equal(t, jobs.ClassTransient, jobs.ClassOf(err), "unmarked errors are retryable")
}

func TestRunnerTurnsPanicsIntoErrors(t *testing.T) {
	t.Parallel()
	for _, role := range []string{jobs.RoleReader, jobs.RoleProcessor, jobs.RoleWriter} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			r, p := jobs.Reader(items(1)), jobs.Processor(nil)
			w := jobs.Writer(jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error { return nil }))
			switch role {
			case jobs.RoleReader:
				r = jobs.ReaderFunc(func(context.Context, *jobs.Context) ([]jobs.Item, error) { panic("reader broke") })
			case jobs.RoleProcessor:
				p = jobs.ProcessorFunc(func(context.Context, *jobs.Context, jobs.Item) (jobs.Item, bool, error) {
					var m map[string]int
					m["x"]++ // a real runtime panic
					return jobs.Item{}, true, nil
				})
			case jobs.RoleWriter:
				w = jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error { panic(fmt.Errorf("writer broke")) })
			}
			var runner jobs.Runner
			exec, err := runner.Run(t.Context(), route(1, r, p, w), &jobs.Context{})
			var pe *jobs.PanicError
			require.ErrorAs(t, err, &pe)
			require.Contains(t, pe.Service, role)
			require.NotEmpty(t, pe.Stack)
			require.Equal(t, jobs.ClassPanic, jobs.ClassOf(err))
			require.True(t, jobs.IsPermanent(err))
			require.Equal(t, jobs.StatusFailed, exec.Status)
		})
	}
}

func TestRunnerEmptyRead(t *testing.T) {
	t.Parallel()
	var called bool
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), route(10, items(0), nil, jobs.WriterFunc(func(context.Context, *jobs.Context, []jobs.Item) error {
		called = true
		return nil
	})), &jobs.Context{})
	require.NoError(t, err)
	require.False(t, called, "no items, no write")
	read, written, skipped := exec.Counts()
	require.Zero(t, read+written+skipped)
}
