package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
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
// field or the (redacted) URL and never contains the password. The caller
// closes the pool.
func NewPool(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx's parse errors may quote the raw URL (a *url.Error does) and
		// keep it in ParseConfigError.ConnString: report only redacted text,
		// and do not wrap.
		return nil, fmt.Errorf("postgres: Config.URL: %s", redactText(err.Error(), ""))
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
	password := pcfg.ConnConfig.Password

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: create pool for %s: %s", RedactURL(cfg.URL), redactText(err.Error(), password))
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
		return nil, fmt.Errorf("postgres: connect to %s: %s", RedactURL(cfg.URL), redactText(err.Error(), password))
	}
	return pool, nil
}

// Redacted stands in for a password in redacted text.
const redacted = "xxxxx"

var (
	// password=... in a key=value DSN or free text, quoted or not.
	kvSecretRe = regexp.MustCompile(`(?i)\b((?:ssl)?password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]*)`)
	// scheme://user:password@ in text that does not parse as a URL; greedy
	// up to the last @ of the run, so a password containing @ or / is
	// covered too (at worst the host is masked as well).
	userinfoRe = regexp.MustCompile(`(://[^:/@\s"'` + "`" + `]*):[^\s"'` + "`" + `]*@`)
)

// RedactURL returns s, a connection URL (postgres://, amqp://, http://…) or
// a key=value DSN, with every password replaced by "xxxxx": the password of
// the URL's user info, password-like query parameters (password,
// sslpassword, passwd, pwd, and any name containing "secret" or "token"),
// and password=… pairs. Something that does not parse as a URL is masked
// by pattern, erring on the side of masking too much.
func RedactURL(s string) string {
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil && (u.User != nil || !strings.Contains(s, "@")) {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), redacted)
			}
			if u.RawQuery != "" {
				q := u.Query()
				changed := false
				for k := range q {
					if secretKey(k) {
						q[k] = []string{redacted}
						changed = true
					}
				}
				if changed {
					u.RawQuery = q.Encode()
				}
			}
			return u.String()
		}
	}
	return redactText(s, "")
}

// secretKey reports whether a query parameter name holds a secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	switch k {
	case "password", "sslpassword", "passwd", "pwd":
		return true
	}
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// redactText masks passwords in free text, such as a driver error that
// quotes a connection string: URL user info, password=… pairs, and literal
// occurrences of password when it is at least 4 characters long (a shorter
// one would mask ordinary words; the patterns still cover it where it
// appears as part of a connection string).
func redactText(s, password string) string {
	if len(password) >= 4 {
		s = strings.ReplaceAll(s, password, redacted)
		if esc := url.QueryEscape(password); esc != password {
			s = strings.ReplaceAll(s, esc, redacted)
		}
	}
	s = userinfoRe.ReplaceAllString(s, "${1}:"+redacted+"@")
	return kvSecretRe.ReplaceAllString(s, "${1}${2}"+redacted)
}
