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
			require.NotContains(t, err.Error(), secret)
			require.NotContains(t, err.Error(), secret[2:len(secret)-2])
			t.Log(err)
		})
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
