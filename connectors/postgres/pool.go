package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults applied by NewPool to zero Config fields.
const (
	DefaultMaxConns         = 8
	DefaultAcquireTimeout   = 5 * time.Second
	DefaultStatementTimeout = 10 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultApplicationName  = "revsync"
)

// Config configures the PostgreSQL connection pool. The zero value of every
// field but URL means "use the default".
type Config struct {
	// URL is the connection string, a postgres:// URL or key=value DSN.
	// Required. It is never written into an error or a log unredacted.
	URL string `yaml:"url"`
	// MaxConns is the largest number of open connections. Default 8.
	MaxConns int `yaml:"max_conns"`
	// AcquireTimeout bounds the wait for a free connection. pgx has no such
	// setting, so the pool itself does not enforce it: NewPool uses it for
	// its start-up check and services pass it to Acquire (for the reader:
	// ReaderConfig.AcquireTimeout, which should get the same value).
	// Default 5s.
	AcquireTimeout time.Duration `yaml:"acquire_timeout"`
	// StatementTimeout is set as the session parameter statement_timeout
	// on every connection, so the server cancels a statement that runs
	// longer (SQLSTATE 57014, a transient error). It overrides any
	// statement_timeout in URL. Default 10s.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// ConnectTimeout bounds establishing one connection, including TLS and
	// authentication. Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ApplicationName is reported to the server (pg_stat_activity) unless
	// URL sets application_name itself. Default "revsync".
	ApplicationName string `yaml:"application_name"`
	// Lazy skips the start-up check: by default NewPool opens one
	// connection and pings the server, so a wrong URL or password fails at
	// start-up instead of on every message.
	Lazy bool `yaml:"lazy"`
}

// withDefaults returns cfg with defaults filled in, or an error naming the
// first field that is wrong.
func (cfg Config) withDefaults() (Config, error) {
	if strings.TrimSpace(cfg.URL) == "" {
		return cfg, errors.New("postgres: Config.URL: missing")
	}
	switch {
	case cfg.MaxConns < 0 || cfg.MaxConns > math.MaxInt32:
		return cfg, fmt.Errorf("postgres: Config.MaxConns: must be between 1 and %d, got %d", math.MaxInt32, cfg.MaxConns)
	case cfg.AcquireTimeout < 0:
		return cfg, fmt.Errorf("postgres: Config.AcquireTimeout: must not be negative, got %s", cfg.AcquireTimeout)
	case cfg.StatementTimeout < 0:
		return cfg, fmt.Errorf("postgres: Config.StatementTimeout: must not be negative, got %s", cfg.StatementTimeout)
	case cfg.StatementTimeout > 0 && cfg.StatementTimeout < time.Millisecond:
		return cfg, fmt.Errorf("postgres: Config.StatementTimeout: must be at least 1ms, got %s", cfg.StatementTimeout)
	case cfg.ConnectTimeout < 0:
		return cfg, fmt.Errorf("postgres: Config.ConnectTimeout: must not be negative, got %s", cfg.ConnectTimeout)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.AcquireTimeout == 0 {
		cfg.AcquireTimeout = DefaultAcquireTimeout
	}
	if cfg.StatementTimeout == 0 {
		cfg.StatementTimeout = DefaultStatementTimeout
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = DefaultApplicationName
	}
	return cfg, nil
}

// NewPool builds a connection pool from cfg. Unless cfg.Lazy is set it
// connects once and pings the server, bounded by ConnectTimeout plus
// AcquireTimeout, and fails if that does not work. The error names the
// field or the (redacted) URL and never contains the password: a URL that
// does not parse is reported without the driver's explanation, which may
// quote a piece of the password the URL syntax misplaced (an unescaped
// '#', '/' or '?' in it), unless the URL holds no secret at all. The
// caller closes the pool.
func NewPool(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, parseError(cfg.URL, err)
	}
	pcfg.MaxConns = int32(cfg.MaxConns)
	if pcfg.MinConns > pcfg.MaxConns {
		pcfg.MinConns = pcfg.MaxConns
	}
	pcfg.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	pcfg.PingTimeout = cfg.ConnectTimeout
	if pcfg.ConnConfig.RuntimeParams == nil {
		pcfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	if pcfg.ConnConfig.RuntimeParams["application_name"] == "" {
		pcfg.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	}
	// What the driver's errors must not show: the password pgx found, and
	// whatever the connection string's syntax says is secret.
	secrets := append(redactConnString(cfg.URL).secrets, pcfg.ConnConfig.Password)

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: create pool for %s: %s", RedactURL(cfg.URL), redactText(err.Error(), secrets...))
	}
	if cfg.Lazy {
		return pool, nil
	}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout+cfg.AcquireTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("postgres: connect to %s: %w", RedactURL(cfg.URL), ctx.Err())
		}
		// The driver's error is not wrapped: a *pgconn.ConnectError carries
		// the whole configuration, password included.
		return nil, fmt.Errorf("postgres: connect to %s: %s", RedactURL(cfg.URL), redactText(err.Error(), secrets...))
	}
	return pool, nil
}

// errInvalidConnString explains a connection string pgx cannot parse,
// without quoting it.
const errInvalidConnString = "not a valid PostgreSQL URL or key=value DSN " +
	"(check its syntax and options, and that special characters in a URL's user name or password are percent-encoded)"

// parseError reports that pgx could not parse connString. pgx's own text
// is used only when connString holds no secret: it quotes pieces of the
// string (`invalid port ":S3cr" after host` for a password holding an
// unescaped '#'), and which pieces cannot be known. Otherwise the error
// shows the redacted string when its redaction is certain to be complete,
// and nothing of it when not. The pgx error is not wrapped: it keeps the
// raw string in ParseConfigError.ConnString.
func parseError(connString string, err error) error {
	r := redactConnString(connString)
	switch {
	case r.reliable && len(r.secrets) == 0:
		return fmt.Errorf("postgres: Config.URL: %s", err.Error())
	case r.reliable:
		return fmt.Errorf("postgres: Config.URL: %s: %s", errInvalidConnString, r.text)
	}
	return fmt.Errorf("postgres: Config.URL: %s", errInvalidConnString)
}
