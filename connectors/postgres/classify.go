package postgres

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/revsync/revsync/jobs"
)

// classify decides, at the package boundary, whether err can be fixed by
// retrying. It returns err wrapped with jobs.Permanent when PostgreSQL
// rejected the statement or its values for a reason a later attempt
// meets again (see permanentSQLState), and err unchanged otherwise:
// unchanged errors are transient, the jobs default. An error already
// classified (a jobs.PermanentError or jobs.TransientError) is returned
// as it is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var perm *jobs.PermanentError
	var trans *jobs.TransientError
	if errors.As(err, &perm) || errors.As(err, &trans) {
		return err
	}
	if transientCause(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && permanentSQLState(pgErr.Code) {
		return jobs.Permanent(err)
	}
	return err
}

// transientCause reports whether err comes from the connection or a
// deadline rather than from the statement: timeouts, cancellation, network
// errors, failed connects, a connection that closed, and server errors
// about the connection, the server's state or a conflict with another
// transaction.
func transientCause(err error) bool {
	var (
		netErr     net.Error
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return true
	case pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	case errors.As(err, &connectErr), errors.As(err, &netErr):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &pgErr):
		return transientSQLState(pgErr.Code)
	}
	return false
}

// transientSQLState reports whether a SQLSTATE says the statement may
// succeed if run again: the connection or server is in trouble, the
// statement was cancelled (statement_timeout), or it lost a conflict.
func transientSQLState(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "08", // connection exception
		"40", // transaction rollback: 40001 serialization failure, 40P01 deadlock
		"53", // insufficient resources: disk full, out of memory, too many connections
		"55", // object not in prerequisite state: 55P03 lock not available
		"57", // operator intervention: 57014 query canceled (statement_timeout), 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now
		"58": // system error (I/O error)
		return true
	}
	return false
}

// permanentSQLState reports whether a SQLSTATE says the statement fails
// the same way every time until someone changes the schema, the
// configuration or the data: the table or column does not exist, a syntax
// or privilege error, a value that does not fit its column.
func permanentSQLState(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "0A", // feature not supported (after the reader's one re-prepare)
		"21", // cardinality violation
		"22", // data exception: 22P02 invalid text representation, 22003 numeric value out of range
		"23", // integrity constraint violation
		"3F", // invalid schema name
		"42", // syntax error or access rule violation: 42P01 undefined table, 42703 undefined column, 42501 insufficient privilege
		"44": // with check option violation
		return true
	}
	return false
}
