package workertest

import (
	"context"
	"sync"

	"github.com/revsync/revsync/worker"
)

// Settler is a fake worker.Settler. Each Func field, when set, decides what
// the matching call returns (nil: success). Every call is recorded.
type Settler struct {
	AckFunc        func(ctx context.Context) error
	DeadLetterFunc func(ctx context.Context, dl worker.DeadLetter) error
	RetryFunc      func(ctx context.Context, r worker.Retry) error
	RequeueFunc    func(ctx context.Context) error

	mu      sync.Mutex
	calls   Calls
	settled chan struct{}
}

// Calls is what a Settler was asked to do.
type Calls struct {
	Acks            int                 // Ack calls that succeeded
	Requeues        int                 // Requeue calls that succeeded
	DeadLetterTries int                 // DeadLetter calls, failed ones included
	DeadLetters     []worker.DeadLetter // DeadLetter calls that succeeded
	RetryTries      int                 // Retry calls, failed ones included
	Retries         []worker.Retry      // Retry calls that succeeded
	Failed          int                 // calls of any kind that returned an error
}

// Settled is how many calls succeeded: a delivery is settled once.
func (c Calls) Settled() int { return c.Acks + c.Requeues + len(c.DeadLetters) + len(c.Retries) }

var _ worker.Settler = (*Settler)(nil)

// Ack records an ack.
func (s *Settler) Ack(ctx context.Context) error {
	var err error
	if s.AckFunc != nil {
		err = s.AckFunc(ctx)
	}
	s.record(err, func(c *Calls) { c.Acks++ })
	return err
}

// DeadLetter records a dead-letter request.
func (s *Settler) DeadLetter(ctx context.Context, dl worker.DeadLetter) error {
	var err error
	if s.DeadLetterFunc != nil {
		err = s.DeadLetterFunc(ctx, dl)
	}
	s.mu.Lock()
	s.calls.DeadLetterTries++
	s.mu.Unlock()
	s.record(err, func(c *Calls) { c.DeadLetters = append(c.DeadLetters, dl) })
	return err
}

// Retry records a retry request.
func (s *Settler) Retry(ctx context.Context, r worker.Retry) error {
	var err error
	if s.RetryFunc != nil {
		err = s.RetryFunc(ctx, r)
	}
	s.mu.Lock()
	s.calls.RetryTries++
	s.mu.Unlock()
	s.record(err, func(c *Calls) { c.Retries = append(c.Retries, r) })
	return err
}

// Requeue records a requeue.
func (s *Settler) Requeue(ctx context.Context) error {
	var err error
	if s.RequeueFunc != nil {
		err = s.RequeueFunc(ctx)
	}
	s.record(err, func(c *Calls) { c.Requeues++ })
	return err
}

func (s *Settler) record(err error, ok func(*Calls)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if err != nil {
		s.calls.Failed++
		return
	}
	ok(&s.calls)
	select {
	case <-s.settled:
	default:
		close(s.settled)
	}
}

func (s *Settler) init() {
	if s.settled == nil {
		s.settled = make(chan struct{})
	}
}

// Calls returns a snapshot of the calls so far.
func (s *Settler) Calls() Calls {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	c.DeadLetters = append([]worker.DeadLetter(nil), c.DeadLetters...)
	c.Retries = append([]worker.Retry(nil), c.Retries...)
	return c
}

// Settled returns a channel closed once a call has succeeded.
func (s *Settler) Settled() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	return s.settled
}

// NewDelivery returns a delivery of body with the message ID and routing
// key, and the fake Settler that records how it was settled.
func NewDelivery(body []byte, messageID, rk string) (worker.Delivery, *Settler) {
	s := &Settler{}
	return worker.Delivery{Body: body, MessageID: messageID, RoutingKey: rk, Settler: s}, s
}

// Source is a fake worker.Source fed by Send. Cancel closes the deliveries
// channel after what was already sent, like a broker consumer whose
// cancel-ok arrived.
type Source struct {
	// CancelFunc, when set, is called by Cancel; an error from it is
	// returned and the channel stays open.
	CancelFunc func(ctx context.Context) error
	// ErrValue is what Err returns.
	ErrValue error

	mu        sync.Mutex
	ch        chan worker.Delivery
	closed    bool
	cancelled chan struct{}
}

var _ worker.Source = (*Source)(nil)

// NewSource returns a Source whose channel buffers up to buffer deliveries,
// as a broker's prefetch would.
func NewSource(buffer int) *Source {
	return &Source{ch: make(chan worker.Delivery, buffer), cancelled: make(chan struct{})}
}

// Send queues d without blocking. It reports false when the buffer is full
// or the source is closed: size the buffer for what a test sends.
func (s *Source) Send(d worker.Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	select {
	case s.ch <- d:
		return true
	default:
		return false
	}
}

// Deliveries returns the deliveries channel.
func (s *Source) Deliveries() <-chan worker.Delivery { return s.ch }

// Cancel closes the deliveries channel (after CancelFunc, if set).
func (s *Source) Cancel(ctx context.Context) error {
	if s.CancelFunc != nil {
		if err := s.CancelFunc(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.cancelled:
	default:
		close(s.cancelled)
	}
	s.closeLocked()
	return nil
}

// Close ends the source on its own, as a lost connection would; set
// ErrValue first to say why.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *Source) closeLocked() {
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// Cancelled returns a channel closed once Cancel succeeded.
func (s *Source) Cancelled() <-chan struct{} { return s.cancelled }

// Err returns ErrValue.
func (s *Source) Err() error { return s.ErrValue }
