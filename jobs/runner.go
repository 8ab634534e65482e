package jobs

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// Status is the state a job or step run ended in.
type Status string

// Run statuses.
const (
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
)

// Execution is the record of one job run.
type Execution struct {
	Job     string
	Status  Status
	Err     error // nil when completed
	Started time.Time
	Ended   time.Time
	Steps   []StepExecution
}

// Duration is how long the run took.
func (e *Execution) Duration() time.Duration { return e.Ended.Sub(e.Started) }

// Counts returns the read, written and skipped items summed over the steps.
func (e *Execution) Counts() (read, written, skipped int) {
	for _, s := range e.Steps {
		read += s.Read
		written += s.Written
		skipped += s.Skipped
	}
	return read, written, skipped
}

// StepExecution is the record of one step of a run.
type StepExecution struct {
	Step     string
	Status   Status
	Err      error
	Read     int // items the reader returned
	Written  int // items passed to successful Write calls
	Skipped  int // items a processor filtered out
	Warnings []string
	Started  time.Time
	Ended    time.Time
}

// Warn records a warning on the step being run. Services call it for
// something worth an operator's attention that does not fail the run.
func (jc *Context) Warn(format string, args ...any) {
	if jc.step != nil {
		jc.step.Warnings = append(jc.step.Warnings, fmt.Sprintf(format, args...))
	}
}

// Runner runs jobs. The zero value is ready to use.
type Runner struct {
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run executes the route's steps in order for the job context. Each step
// reads, processes every item (a processor may filter one out) and writes
// the kept items in batches of the step's batch_size. The first failing
// step stops the job. A panic in any service becomes a PanicError with its
// stack. The returned error is the Execution's Err.
func (r *Runner) Run(ctx context.Context, route *Route, jc *Context) (*Execution, error) {
	exec := &Execution{Job: route.Job.Name, Started: r.now(), Status: StatusCompleted}
	jc.Job = route.Job.Name
	for _, rs := range route.Steps {
		exec.Steps = append(exec.Steps, StepExecution{Step: rs.Step.Name, Started: r.now()})
		se := &exec.Steps[len(exec.Steps)-1]
		jc.step = se
		err := r.runStep(ctx, rs, jc, se)
		jc.step = nil
		se.Ended = r.now()
		if err != nil {
			se.Status, se.Err = StatusFailed, err
			exec.Status = StatusFailed
			exec.Err = fmt.Errorf("job %q step %q: %w", route.Job.Name, rs.Step.Name, err)
			break
		}
		se.Status = StatusCompleted
	}
	exec.Ended = r.now()
	return exec, exec.Err
}

func (r *Runner) runStep(ctx context.Context, rs RouteStep, jc *Context, se *StepExecution) error {
	var items []Item
	err := guard(RoleReader, rs.Step.Reader, func() (err error) {
		items, err = rs.Reader.Read(ctx, jc)
		return err
	})
	if err != nil {
		return err
	}
	se.Read = len(items)
	size := rs.Step.Parameters.BatchSize
	if size <= 0 {
		size = DefaultBatchSize
	}
	batch := make([]Item, 0, min(size, len(items)))
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := guard(RoleWriter, rs.Step.Writer, func() error { return rs.Writer.Write(ctx, jc, batch) })
		if err != nil {
			return err
		}
		se.Written += len(batch)
		batch = batch[:0]
		return nil
	}
	for _, item := range items {
		if rs.Processor != nil {
			var keep bool
			err := guard(RoleProcessor, rs.Step.Processor, func() (err error) {
				item, keep, err = rs.Processor.Process(ctx, jc, item)
				return err
			})
			if err != nil {
				return err
			}
			if !keep {
				se.Skipped++
				continue
			}
		}
		batch = append(batch, item)
		if len(batch) == size {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// Roles of the services of a step, as ServiceError reports them.
const (
	RoleReader    = "reader"
	RoleProcessor = "processor"
	RoleWriter    = "writer"
)

// ServiceError is the error of one service of a step: which role it
// played and its registered name. The worker uses the role to tell a
// failing remote (the writer) from a failing database (the reader).
type ServiceError struct {
	Role string // RoleReader, RoleProcessor or RoleWriter
	Name string // the registered service name
	Err  error
}

func (e *ServiceError) Error() string { return e.Err.Error() }

// Unwrap returns the service's error.
func (e *ServiceError) Unwrap() error { return e.Err }

// FailedRole returns the role of the service whose error err is, or "".
func FailedRole(err error) string {
	var se *ServiceError
	if errors.As(err, &se) {
		return se.Role
	}
	return ""
}

// guard runs f, turning a panic into a PanicError, and marks its error
// with the service's role.
func guard(role, name string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Service: role + " " + name, Value: v, Stack: debug.Stack()}
		}
		if err != nil {
			err = &ServiceError{Role: role, Name: name, Err: err}
		}
	}()
	return f()
}
