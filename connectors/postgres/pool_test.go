package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/revsync/revsync/connectors/postgres/pgtest"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"no password", "postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/postgres"},
		{"no user", "postgres://127.0.0.1/db?sslmode=disable", "postgres://127.0.0.1/db?sslmode=disable"},
		{"user and password", "postgres://app:s3cret@db:5432/app?sslmode=disable", "postgres://app:xxxxx@db:5432/app?sslmode=disable"},
		{"postgresql scheme", "postgresql://app:s3cret@db/app", "postgresql://app:xxxxx@db/app"},
		{"amqp", "amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"escaped password", "postgres://app:p%40ss%2Fw0rd@db/app", "postgres://app:xxxxx@db/app"},
		{"password query parameter", "postgres://app@db/app?password=s3cret&sslmode=require", "postgres://app@db/app?password=xxxxx&sslmode=require"},
		{"sslpassword query parameter", "postgres://db/app?sslpassword=s3cret", "postgres://db/app?sslpassword=xxxxx"},
		{"token query parameter", "http://api/x?access_token=s3cret", "http://api/x?access_token=xxxxx"},
		{"unparsable URL", "postgres://app:s3cret@db:notaport/app", "postgres://app:xxxxx@db:notaport/app"},
		{"unescaped @ in password", "postgres://app:s3@cret@db:notaport/app", "postgres://app:xxxxx@db:notaport/app"},
		{"unescaped / in password", "postgres://app:s3/cret@db/app", "postgres://app:xxxxx@db/app"},
		{"key=value DSN", "host=db user=app password=s3cret dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"key=value DSN quoted", "host=db password='s3 cret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"key=value DSN spaces", "host=db password = s3cret dbname=app", "host=db password = xxxxx dbname=app"},
		{"unescaped # in password", "postgres://app:s3#cret@db/app", "postgres://app:xxxxx@db/app"},
		{"unescaped ? in password", "postgres://app:s3?cret@db/app?sslmode=disable", "postgres://app:xxxxx@db/app?sslmode=disable"},
		{"every delimiter in password", "postgres://app:s3/?#@:cret@db:5432/app", "postgres://app:xxxxx@db:5432/app"},
		{"@ in a query password", "postgres://app@db/app?sslmode=disable&password=s3@cret", "postgres://xxxxx"},
		{"odd user name", "postgres://db/app:s3cret@h/app", "postgres://xxxxx@h/app"},
		{"key=value DSN ; and & in password", "host=db password=s3;c&cret dbname=app", "host=db password=xxxxx dbname=app"},
		{"key=value DSN escaped space", `host=db password=s3\ cret dbname=app`, "host=db password=xxxxx dbname=app"},
		{"key=value DSN escaped quote", `host=db password='s3\'cret' dbname=app`, "host=db password=xxxxx dbname=app"},
		{"key=value DSN quoted, no space after", "password='s3 cret'host=db", "password=xxxxxhost=db"},
		{"key=value DSN with ://", "host=db password=s3://cret@x dbname=app", "host=db password=xxxxx dbname=app"},
		{"key=value DSN unterminated quote", "host=db password='s3cret dbname=app", "host=db password=xxxxx dbname=app"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := RedactURL(tt.in)
			require.Equal(t, tt.want, got)
			require.NotContains(t, got, "s3cret")
			require.NotContains(t, got, "cret")
		})
	}
}

// TestRedactConnStringReliable: a redaction is reliable only when the
// syntax leaves no doubt about where every secret is.
func TestRedactConnStringReliable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		reliable bool
		secrets  []string
	}{
		{"postgres://app@db/app", true, nil},
		{"postgres://db:notaport/app", false, nil}, // "notaport" could be a misplaced password
		{"postgres://app:s3#cret@db/app", true, []string{"s3#cret"}},
		{"postgres://app:s3/cret@db:notaport/app", true, []string{"s3/cret"}},
		{"postgres://app@db/app?password=s3cret", false, []string{"s3cret"}}, // an "&" may have ended it early
		{"postgres://app@db/app?sslmode=x&password=s3@cret", true, []string{"app@db/app?sslmode=x&password=s3@cret"}},
		{"host=db port=x", true, nil},
		{"host=db password='s3 cret'", true, []string{"s3 cret"}},
		{"host=db password=s3 cret port=1", false, nil}, // "cret port" is no keyword
		{"host=db password='s3cret", false, nil},
		{`host=db password=s3cret\`, false, nil},
		{"host=db password", false, nil},
	}
	for _, tt := range tests {
		r := redactConnString(tt.in)
		require.Equal(t, tt.reliable, r.reliable, tt.in)
		if tt.reliable {
			require.Equal(t, tt.secrets, r.secrets, tt.in)
			require.NotContains(t, r.text, "cret", tt.in)
		}
	}
}

func TestNewPoolConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"missing URL", Config{}, "Config.URL"},
		{"negative MaxConns", Config{URL: "postgres://db/x", MaxConns: -1}, "Config.MaxConns"},
		{"negative AcquireTimeout", Config{URL: "postgres://db/x", AcquireTimeout: -time.Second}, "Config.AcquireTimeout"},
		{"negative StatementTimeout", Config{URL: "postgres://db/x", StatementTimeout: -time.Second}, "Config.StatementTimeout"},
		{"sub-millisecond StatementTimeout", Config{URL: "postgres://db/x", StatementTimeout: time.Microsecond}, "Config.StatementTimeout"},
		{"negative ConnectTimeout", Config{URL: "postgres://db/x", ConnectTimeout: -time.Second}, "Config.ConnectTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool, err := NewPool(context.Background(), tt.cfg)
			require.Nil(t, pool)
			require.ErrorContains(t, err, tt.field)
		})
	}
}

// TestNewPoolErrorsHideThePassword covers the ways a password could reach
// an error: pgx's parse errors quote the URL, connect errors describe the
// configuration.
func TestNewPoolErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const secret = "Sup3rS3cretPw"
	tests := []struct {
		name string
		url  string
	}{
		{"unparsable port", "postgres://app:" + secret + "@127.0.0.1:notaport/app"},
		{"unparsable, @ in password", "postgres://app:" + secret + "@x@127.0.0.1:notaport/app"},
		{"bad query option", "postgres://app:" + secret + "@127.0.0.1:1/app?connect_timeout=soon"},
		{"unreachable URL", "postgres://app:" + secret + "@127.0.0.1:1/app"},
		{"unreachable DSN", "host=127.0.0.1 port=1 user=app password=" + secret + " dbname=app"},
		{"unreachable, password in query", "postgres://app@127.0.0.1:1/app?password=" + secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pool, err := NewPool(ctx, Config{URL: tt.url, ConnectTimeout: 2 * time.Second, AcquireTimeout: time.Second})
			require.Nil(t, pool)
			require.Error(t, err)
			requireNoFragment(t, err.Error(), secret)
			t.Log(err)
		})
	}
}

// TestNewPoolErrorsHideMisplacedPasswords: a password holding an
// unescaped URL delimiter makes the URL unparsable, or parsable with a
// piece of the password as the port, the database or the fragment; the
// driver then quotes that piece ("invalid port \":S3cr\" after host"). No
// piece of 3 characters or more may reach the error.
func TestNewPoolErrorsHideMisplacedPasswords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		url      string
		password string
		want     []string // in the error
	}{
		{"# in password", "postgres://postgres:Zq9Xv#Wk7J@127.0.0.1/postgres", "Zq9Xv#Wk7J",
			[]string{"not a valid PostgreSQL URL", "percent-encoded", "postgres://postgres:xxxxx@127.0.0.1/postgres"}},
		{"reported URL", "postgres://postgres:S3cr#etPW@127.0.0.1/postgres", "S3cr#etPW",
			[]string{"postgres://postgres:xxxxx@127.0.0.1/postgres"}},
		{"/ in password", "postgres://postgres:Zq9Xv/Wk7J@127.0.0.1/postgres", "Zq9Xv/Wk7J",
			[]string{"postgres://postgres:xxxxx@127.0.0.1/postgres"}},
		{"? in password", "postgres://postgres:Zq9Xv?Wk7J@127.0.0.1/postgres?sslmode=disable", "Zq9Xv?Wk7J",
			[]string{"postgres://postgres:xxxxx@127.0.0.1/postgres?sslmode=disable"}},
		{"@ in password, bad port", "postgres://postgres:Zq9Xv@Wk7J@127.0.0.1:notaport/postgres", "Zq9Xv@Wk7J",
			[]string{"postgres://postgres:xxxxx@127.0.0.1:notaport/postgres"}},
		{"@ in password, unreachable", "postgres://postgres:Zq9Xv@Wk7J@127.0.0.1:1/postgres", "Zq9Xv@Wk7J",
			[]string{"postgres://postgres:xxxxx@127.0.0.1:1/postgres"}},
		{"every delimiter in password", "postgres://postgres:Zq9/X?v#W@k7J@127.0.0.1/postgres", "Zq9/X?v#W@k7J", nil},
		{"digits then / : read as a port and a database", "postgres://127.0.0.1:6543/Zq9XvWk7J@db/app", "6543/Zq9XvWk7J", nil},
		{"digits then # : read as a port and a fragment", "postgres://127.0.0.1:6543#Zq9XvWk7J@db/app", "6543#Zq9XvWk7J", nil},
		{"3 digits then / : read as a port and a database", "postgres://127.0.0.1:654/Zq9XvWk7J@db/app", "654/Zq9XvWk7J", nil},
		{"@ in a query password, bad port", "postgres://app@127.0.0.1:x/app?password=Zq9Xv@Wk7J", "Zq9Xv@Wk7J", nil},
		{"& in a query password, bad port", "postgres://app@127.0.0.1:x/app?password=Zq9Xv&Wk7J", "Zq9Xv&Wk7J", nil},
		{"DSN quoted, bad port", "host=127.0.0.1 port=notaport user=app password='Zq9 Xv#Wk7J' dbname=app", "Zq9 Xv#Wk7J",
			[]string{"not a valid PostgreSQL URL", "host=127.0.0.1 port=notaport user=app password=xxxxx dbname=app"}},
		{"DSN quoted, unreachable", "host=127.0.0.1 port=1 user=app password='Zq9 Xv#Wk7J' dbname=app", "Zq9 Xv#Wk7J",
			[]string{"host=127.0.0.1 port=1 user=app password=xxxxx dbname=app"}},
		{"DSN escaped quote, bad port", `host=127.0.0.1 port=x password='Zq9\'Xv@Wk7J' dbname=app`, `Zq9\'Xv@Wk7J`,
			[]string{"password=xxxxx dbname=app"}},
		{"DSN unterminated quote", "host=127.0.0.1 password='Zq9Xv/Wk7J dbname=app", "Zq9Xv/Wk7J", []string{"not a valid PostgreSQL URL"}},
		{"DSN unquoted space", "host=127.0.0.1 port=x password=Zq9Xv Wk7J dbname=app", "Zq9Xv Wk7J", []string{"not a valid PostgreSQL URL"}},
		{"DSN trailing backslash", `host=127.0.0.1 password=Zq9Xv/Wk7J\`, `Zq9Xv/Wk7J\`, []string{"not a valid PostgreSQL URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pool, err := NewPool(ctx, Config{URL: tt.url, ConnectTimeout: 2 * time.Second, AcquireTimeout: time.Second})
			if pool != nil {
				pool.Close()
			}
			require.Error(t, err)
			t.Log(err)
			requireNoFragment(t, err.Error(), tt.password)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestNewPoolParseErrorWithoutSecret: a connection string without a
// password keeps the driver's explanation.
func TestNewPoolParseErrorWithoutSecret(t *testing.T) {
	t.Parallel()
	_, err := NewPool(context.Background(), Config{URL: "postgres://app@127.0.0.1:1/app?connect_timeout=soon"})
	require.ErrorContains(t, err, "postgres: Config.URL: ")
	require.ErrorContains(t, err, "connect_timeout")
}

// requireNoFragment fails when s holds secret or any piece of it 3
// characters or longer.
func requireNoFragment(t *testing.T, s, secret string) {
	t.Helper()
	const n = 3
	for i := 0; i+n <= len(secret); i++ {
		require.NotContains(t, s, secret[i:i+n], "a piece of the password is in the error")
	}
}

func TestNewPoolSettings(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pool, err := NewPool(ctx, Config{URL: url})
		require.NoError(t, err)
		defer pool.Close()
		require.EqualValues(t, DefaultMaxConns, pool.Config().MaxConns)
		require.Equal(t, DefaultConnectTimeout, pool.Config().ConnConfig.ConnectTimeout)
		var st, app string
		require.NoError(t, pool.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('application_name')").Scan(&st, &app))
		require.Equal(t, "10s", st)
		require.Equal(t, DefaultApplicationName, app)
	})
	t.Run("configured", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		// The URL's own statement_timeout is overridden; its
		// application_name is kept.
		u := url + sep + "statement_timeout=99&application_name=mine"
		pool, err := NewPool(ctx, Config{URL: u, MaxConns: 3, StatementTimeout: 1500 * time.Millisecond, Lazy: true})
		require.NoError(t, err)
		defer pool.Close()
		require.EqualValues(t, 3, pool.Config().MaxConns)
		var st, app string
		require.NoError(t, pool.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('application_name')").Scan(&st, &app))
		require.Equal(t, "1500ms", st)
		require.Equal(t, "mine", app)
	})
}
