package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
	"github.com/revsync/revsync/jobs/jobstest"
)

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
	w := &jobstest.Writer{}
	skipOdd := jobs.ProcessorFunc(func(_ context.Context, jc *jobs.Context, it jobs.Item) (jobs.Item, bool, error) {
		if it.Fields["n"].(int)%2 == 1 {
			return it, false, nil
		}
		jc.Warn("kept %d", it.Fields["n"])
		return it, true, nil
	})
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), jobstest.NewRoute(items(7), skipOdd, w, 2), &jobs.Context{})
	require.NoError(t, err)
	require.Equal(t, jobs.StatusCompleted, exec.Status)
	var sizes []int
	for _, b := range w.Batches() {
		sizes = append(sizes, len(b))
	}
	require.Equal(t, []int{2, 2}, sizes, "4 kept items in batches of 2")
	read, written, skipped := exec.Counts()
	require.Equal(t, [3]int{7, 4, 3}, [3]int{read, written, skipped})
	require.Len(t, exec.Steps, 1)
	s := exec.Steps[0]
	require.Equal(t, jobs.StatusCompleted, s.Status)
	require.Equal(t, []string{"kept 0", "kept 2", "kept 4", "kept 6"}, s.Warnings)
	require.False(t, s.Started.IsZero())
	require.False(t, s.Ended.Before(s.Started))
	require.Equal(t, "export", exec.Job)
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
	rt := jobstest.NewRoute(items(3), nil, w, 1)
	rt.Steps = append(rt.Steps, jobs.RouteStep{Step: second, Reader: items(1), Writer: w})
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), rt, &jobs.Context{})
	require.ErrorIs(t, err, boom)
	require.Equal(t, jobs.ClassPermanent, jobs.ClassOf(err), "the class survives the wrapping")
	require.Equal(t, jobs.RoleWriter, jobs.FailedRole(err))
	require.Contains(t, err.Error(), `job "export" step "export"`)
	require.Equal(t, jobs.StatusFailed, exec.Status)
	require.Len(t, exec.Steps, 1, "the second step never ran")
	require.Equal(t, 1, exec.Steps[0].Written, "the first batch was written before the failure")
	require.Equal(t, jobs.StatusFailed, exec.Steps[0].Status)
}

func TestRunnerMarksTheFailingRole(t *testing.T) {
	t.Parallel()
	fail := errors.New("down")
	var runner jobs.Runner
	_, err := runner.Run(t.Context(), jobstest.NewRoute(&jobstest.Reader{Err: fail}, nil, &jobstest.Writer{}, 1), &jobs.Context{})
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
			w := jobs.Writer(&jobstest.Writer{})
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
			exec, err := runner.Run(t.Context(), jobstest.NewRoute(r, p, w, 1), &jobs.Context{})
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
	w := &jobstest.Writer{}
	var runner jobs.Runner
	exec, err := runner.Run(t.Context(), jobstest.NewRoute(items(0), nil, w, 10), &jobs.Context{})
	require.NoError(t, err)
	require.Empty(t, w.Batches(), "no items, no write")
	read, written, skipped := exec.Counts()
	require.Zero(t, read+written+skipped)
}
