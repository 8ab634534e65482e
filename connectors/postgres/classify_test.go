package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/jobs"
)

// safeToRetryError is what pgconn returns for failures before anything
// was sent (its own types are unexported).
type safeToRetryError struct{}

func (safeToRetryError) Error() string     { return "conn busy" }
func (safeToRetryError) SafeToRetry() bool { return true }

func pgErr(code string) error {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "message for " + code}
}

// realConnectError returns a genuine *pgconn.ConnectError (its cause field
// is unexported): a connect to a closed port.
func realConnectError(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connect to port 1 succeeded")
	}
	var ce *pgconn.ConnectError
	require.ErrorAs(t, err, &ce)
	return err
}

func TestClassify(t *testing.T) {
	t.Parallel()
	already := jobs.Permanent(errors.New("bad mapping"))
	transientHint := &jobs.TransientError{RetryAfter: time.Second, Err: pgErr("42P01")}

	tests := []struct {
		name string
		err  error
		want jobs.Class
	}{
		{"nil", nil, ""},
		{"plain error", errors.New("something odd"), jobs.ClassTransient},
		{"context deadline", context.DeadlineExceeded, jobs.ClassTransient},
		{"context canceled", context.Canceled, jobs.ClassTransient},
		{"io.EOF", io.EOF, jobs.ClassTransient},
		{"unexpected EOF", io.ErrUnexpectedEOF, jobs.ClassTransient},
		{"net.ErrClosed", net.ErrClosed, jobs.ClassTransient},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, jobs.ClassTransient},
		{"connect error", realConnectError(t), jobs.ClassTransient},
		{"safe to retry", safeToRetryError{}, jobs.ClassTransient},
		{"acquire timeout", &jobs.TransientError{Err: fmt.Errorf("acquire connection: %w", context.DeadlineExceeded)}, jobs.ClassTransient},

		{"08006 connection failure", pgErr("08006"), jobs.ClassTransient},
		{"08003 connection does not exist", pgErr("08003"), jobs.ClassTransient},
		{"57P01 admin shutdown", pgErr("57P01"), jobs.ClassTransient},
		{"57P02 crash shutdown", pgErr("57P02"), jobs.ClassTransient},
		{"57P03 cannot connect now", pgErr("57P03"), jobs.ClassTransient},
		{"57014 query canceled (statement_timeout)", pgErr("57014"), jobs.ClassTransient},
		{"40001 serialization failure", pgErr("40001"), jobs.ClassTransient},
		{"40P01 deadlock", pgErr("40P01"), jobs.ClassTransient},
		{"53300 too many connections", pgErr("53300"), jobs.ClassTransient},
		{"53100 disk full", pgErr("53100"), jobs.ClassTransient},
		{"55P03 lock not available", pgErr("55P03"), jobs.ClassTransient},
		{"58030 io error", pgErr("58030"), jobs.ClassTransient},
		{"XX000 internal error", pgErr("XX000"), jobs.ClassTransient},
		{"28P01 bad password", pgErr("28P01"), jobs.ClassTransient},
		{"P0001 raise exception", pgErr("P0001"), jobs.ClassTransient},
		{"malformed code", pgErr("42"), jobs.ClassTransient},

		{"42P01 undefined table", pgErr("42P01"), jobs.ClassPermanent},
		{"42703 undefined column", pgErr("42703"), jobs.ClassPermanent},
		{"42601 syntax error", pgErr("42601"), jobs.ClassPermanent},
		{"42501 insufficient privilege", pgErr("42501"), jobs.ClassPermanent},
		{"42883 undefined function", pgErr("42883"), jobs.ClassPermanent},
		{"22P02 invalid text representation", pgErr("22P02"), jobs.ClassPermanent},
		{"22003 numeric value out of range", pgErr("22003"), jobs.ClassPermanent},
		{"3F000 invalid schema name", pgErr("3F000"), jobs.ClassPermanent},
		{"0A000 feature not supported", pgErr("0A000"), jobs.ClassPermanent},

		{"already permanent stays", already, jobs.ClassPermanent},
		{"transient hint stays transient", transientHint, jobs.ClassTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var in error
			if tt.err != nil {
				in = fmt.Errorf("read nw.customers customer_id=ALFKI: %w", tt.err)
			}
			got := classify(in)
			require.Equal(t, tt.want, jobs.ClassOf(got))
			if tt.err == nil {
				require.NoError(t, got)
				return
			}
			require.ErrorIs(t, got, tt.err, "the cause stays reachable")
			require.Equal(t, in.Error(), got.Error(), "classification does not change the message")
		})
	}
}

func TestClassifyKeepsClassifiedErrors(t *testing.T) {
	t.Parallel()
	perm := jobs.Permanent(pgErr("08006"))
	require.Same(t, perm, classify(perm))
	trans := &jobs.TransientError{Err: pgErr("42P01")}
	require.Same(t, trans, classify(trans))
}
