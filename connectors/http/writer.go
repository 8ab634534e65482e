package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/revsync/revsync/jobs"
)

// Name is the service name the writer is registered under.
const Name = "http"

// DefaultTimeout bounds one request when the transport sets no timeout.
const DefaultTimeout = 10 * time.Second

// The strategies of the remote section.
const (
	StrategyPut         = "put"           // PUT creates or replaces
	StrategyPostThenPut = "post_then_put" // update; on 404 POST; on 409 update again
)

// RemoteConfig is the connector's "remote" section.
type RemoteConfig struct {
	// Collection is the path new entities are POSTed to, relative to the
	// transport's base_url. Required by strategy post_then_put.
	Collection string `yaml:"collection"`
	// Item is the path of one entity, with {field} placeholders. Required.
	Item string `yaml:"item"`
	// Strategy is StrategyPut or StrategyPostThenPut. Default
	// StrategyPostThenPut.
	Strategy string `yaml:"strategy"`
	// UpdateMethod is PUT or PATCH. Default PUT.
	UpdateMethod string `yaml:"update_method"`
	// DeleteMethod is the method that deletes an entity. Default DELETE.
	DeleteMethod string `yaml:"delete_method"`
}

// FactoryConfig is what every writer the factory builds shares.
type FactoryConfig struct {
	// Logger receives a debug line per request. Default: no logging.
	Logger *zap.Logger
	// Client sends the requests. Default: a client of its own that does not
	// follow redirects. Per-request timeouts come from the transport
	// configuration, not from Client.Timeout.
	Client *http.Client
	// LookupEnv reads the environment variable named by auth_token_env.
	// Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Writer writes items to one connector's REST resource. It is safe for
// concurrent use.
type Writer struct {
	client       *http.Client
	base         string      // base URL without a trailing "/"
	header       http.Header // configured headers and Authorization
	redact       *redactor   // the token and secret header values, masked in quoted bodies
	timeout      time.Duration
	strategy     string
	updateMethod string
	deleteMethod string
	collection   *pathTemplate // nil with StrategyPut and no collection
	item         *pathTemplate
	log          *zap.Logger
}

var (
	_ jobs.Writer = (*Writer)(nil)
	_ jobs.Closer = (*Writer)(nil)
)

// WriterFactory returns the factory of the "http" writer. It checks the
// integration's transport and the connector's "remote" section and reads
// the bearer token from the environment when the writer is built, so that
// a missing variable stops start-up instead of failing every export.
func WriterFactory(cfg FactoryConfig) jobs.WriterFactory {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	lookupEnv := cfg.LookupEnv
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	return func(b *jobs.Binding) (jobs.Writer, error) {
		w := &Writer{
			client: client,
			log:    log.With(zap.String("integration", b.Integration.Name), zap.String("connector", b.Connector.Name)),
		}
		errs := []error{w.configureTransport(b, lookupEnv)}
		var rc RemoteConfig
		ok, err := b.Section("remote", &rc)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !ok:
			errs = append(errs, b.Errorf(`missing key "remote": the http writer needs the entity's paths`))
		default:
			errs = append(errs, w.configureRemote(b, &rc))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return w, nil
	}
}

func (w *Writer) configureTransport(b *jobs.Binding, lookupEnv func(string) (string, bool)) error {
	tr := &b.Integration.Transport
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, b.Errorf("key %q: %s", "transport."+key, fmt.Sprintf(format, args...)))
	}
	base, err := url.Parse(tr.BaseURL)
	switch {
	case tr.BaseURL == "":
		bad("base_url", "missing")
	case err != nil:
		bad("base_url", "not a URL") // the parse error would repeat the URL
	case base.Scheme != "http" && base.Scheme != "https":
		bad("base_url", "want an http or https URL, got scheme %q", base.Scheme)
	case base.Host == "":
		bad("base_url", "missing host")
	case base.User != nil:
		bad("base_url", "credentials in the URL are not allowed: use auth_token_env")
	case base.RawQuery != "" || base.ForceQuery || base.Fragment != "":
		bad("base_url", "want no query or fragment")
	default:
		w.base = strings.TrimRight(base.String(), "/")
	}
	w.timeout = tr.Timeout.Or(DefaultTimeout)
	if w.timeout < 0 {
		bad("timeout", "must be positive, got %s", w.timeout)
	}
	w.header = http.Header{}
	var secrets []string
	for name, value := range tr.Headers {
		switch {
		case !validHeaderName(name):
			bad("headers", "%q is not a header name", name)
		case strings.ContainsAny(value, "\r\n\x00"):
			bad("headers", "the value of %q holds a line break or NUL", name)
		case http.CanonicalHeaderKey(name) == "Authorization" && tr.AuthTokenEnv != "":
			bad("headers", "Authorization is set by auth_token_env; configure only one")
		default:
			w.header.Set(name, value)
			if secretHeader(name) {
				secrets = append(secrets, headerSecrets(name, value)...)
			}
		}
	}
	if env := tr.AuthTokenEnv; env != "" {
		token, ok := lookupEnv(env)
		token = strings.TrimSpace(token)
		switch {
		case !ok || token == "":
			bad("auth_token_env", "environment variable %s is not set or empty", env)
		case strings.ContainsAny(token, "\r\n\x00 "):
			bad("auth_token_env", "environment variable %s holds whitespace or control characters", env)
		default:
			secrets = append(secrets, token)
			w.header.Set("Authorization", "Bearer "+token)
		}
	}
	w.redact = newRedactor(secrets...)
	return errors.Join(errs...)
}

func (w *Writer) configureRemote(b *jobs.Binding, rc *RemoteConfig) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, b.Errorf("key %q: %s", "remote."+key, fmt.Sprintf(format, args...)))
	}
	w.strategy = rc.Strategy
	switch w.strategy {
	case "":
		w.strategy = StrategyPostThenPut
	case StrategyPut, StrategyPostThenPut:
	default:
		bad("strategy", "want %q or %q, got %q", StrategyPostThenPut, StrategyPut, rc.Strategy)
	}
	w.updateMethod = strings.ToUpper(rc.UpdateMethod)
	switch w.updateMethod {
	case "":
		w.updateMethod = http.MethodPut
	case http.MethodPut, http.MethodPatch:
	default:
		bad("update_method", "want PUT or PATCH, got %q", rc.UpdateMethod)
	}
	if w.strategy == StrategyPut && rc.UpdateMethod != "" && w.updateMethod != http.MethodPut {
		bad("update_method", "strategy %q always sends PUT", StrategyPut)
	}
	w.deleteMethod = strings.ToUpper(rc.DeleteMethod)
	switch w.deleteMethod {
	case "":
		w.deleteMethod = http.MethodDelete
	case http.MethodDelete, http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		bad("delete_method", "want DELETE, POST, PUT or PATCH, got %q", rc.DeleteMethod)
	}
	var err error
	if w.item, err = parsePathTemplate(rc.Item); err != nil {
		bad("item", "%v", err)
	}
	if rc.Collection != "" || w.strategy == StrategyPostThenPut {
		if w.collection, err = parsePathTemplate(rc.Collection); err != nil {
			bad("collection", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// validHeaderName reports whether name is an HTTP token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Write sends the items in order, one at a time, and stops at the first
// failure, which it returns wrapped with the entity key.
func (w *Writer) Write(ctx context.Context, jc *jobs.Context, items []jobs.Item) error {
	if jc == nil {
		jc = &jobs.Context{}
	}
	for i := range items {
		item := &items[i]
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("write %s: %w", item.Key, err)
		}
		if err := w.writeItem(ctx, jc, item); err != nil {
			return fmt.Errorf("write %s: %w", item.Key, err)
		}
	}
	return nil
}

// Close releases idle connections.
func (w *Writer) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

func (w *Writer) writeItem(ctx context.Context, jc *jobs.Context, item *jobs.Item) error {
	switch item.Op {
	case jobs.OpDelete:
		return w.delete(ctx, jc, item)
	case jobs.OpUpsert, "":
		return w.upsert(ctx, jc, item)
	}
	return jobs.Permanent(fmt.Errorf("unknown operation %q", item.Op))
}

func (w *Writer) delete(ctx context.Context, jc *jobs.Context, item *jobs.Item) error {
	path, err := w.item.expand(item)
	if err != nil {
		return err
	}
	var body []byte
	if w.deleteMethod != http.MethodDelete {
		// A "soft delete" by POST, PUT or PATCH gets what the mapping made
		// of the deletion (key fields and constants).
		if body, err = json.Marshal(item.Fields); err != nil {
			return jobs.Permanent(fmt.Errorf("encode body: %w", err))
		}
	}
	res, err := w.send(ctx, jc, item, w.deleteMethod, path, body, "")
	if err != nil {
		return err
	}
	if res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusGone {
		return nil // already gone: the outcome a deletion wants
	}
	return res.err(time.Now())
}

func (w *Writer) upsert(ctx context.Context, jc *jobs.Context, item *jobs.Item) error {
	body, err := json.Marshal(item.Fields)
	if err != nil {
		return jobs.Permanent(fmt.Errorf("encode body: %w", err))
	}
	itemPath, err := w.item.expand(item)
	if err != nil {
		return err
	}
	if w.strategy == StrategyPut {
		res, err := w.send(ctx, jc, item, http.MethodPut, itemPath, body, "")
		if err != nil {
			return err
		}
		return res.err(time.Now())
	}

	res, err := w.send(ctx, jc, item, w.updateMethod, itemPath, body, "")
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusNotFound {
		return res.err(time.Now())
	}
	collPath, err := w.collection.expand(item)
	if err != nil {
		return err
	}
	res, err = w.send(ctx, jc, item, http.MethodPost, collPath, body, idempotencyKey(jc, item))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusConflict {
		return res.err(time.Now())
	}
	// Created by someone else since our update: update it now.
	res, err = w.send(ctx, jc, item, w.updateMethod, itemPath, body, "")
	if err != nil {
		return err
	}
	if res.StatusCode == http.StatusNotFound {
		// Created and deleted again while we looked: a later attempt will
		// find out which state is current.
		return &jobs.TransientError{Err: fmt.Errorf("%w (the entity changed concurrently: created, then gone)", res.statusError())}
	}
	return res.err(time.Now())
}

// idempotencyKey names the creation of one entity by one message, for
// remotes that deduplicate POSTs. It is escaped to stay a valid header
// value whatever the message id and key hold.
func idempotencyKey(jc *jobs.Context, item *jobs.Item) string {
	if jc.MessageID == "" {
		return ""
	}
	return url.PathEscape(jc.MessageID) + ":" + url.PathEscape(item.Key.String())
}

// maxErrorBody is how much of a response body an error quotes; maxDrain is
// how much more is read so that the connection can be reused.
const (
	maxErrorBody = 512
	maxDrain     = 64 << 10
)

// send makes one request with the writer's timeout and returns the status,
// headers and the start of the body; the body is drained (bounded) and
// closed. A request that gets no response returns a transient error.
func (w *Writer) send(ctx context.Context, jc *jobs.Context, item *jobs.Item, method, path string, body []byte, idemKey string) (*response, error) {
	reqCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(reqCtx, method, w.base+path, rd)
	if err != nil {
		return nil, jobs.Permanent(fmt.Errorf("%s %s: build request: %w", method, path, unwrapURLError(err)))
	}
	req.Header = w.header.Clone()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	res := &response{Method: method, Path: req.URL.EscapedPath(), redact: w.redact}
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		err = unwrapURLError(err)
		if ctx.Err() == nil && reqCtx.Err() != nil {
			err = fmt.Errorf("no response within %s: %w", w.timeout, err)
		}
		w.log.Debug("remote request failed", zap.String("method", method), zap.String("path", res.Path),
			zap.String("message_id", jc.MessageID), zap.Stringer("entity_key", item.Key),
			zap.Duration("duration", time.Since(start)), zap.Error(err))
		return nil, &jobs.TransientError{Err: fmt.Errorf("%s %s: %w", method, res.Path, err)}
	}
	res.StatusCode = resp.StatusCode
	res.Header = resp.Header
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.Body, _ = io.ReadAll(io.LimitReader(resp.Body, int64(w.redact.readLimit(maxErrorBody))))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	w.log.Debug("remote request", zap.String("method", method), zap.String("path", res.Path),
		zap.String("message_id", jc.MessageID), zap.Stringer("entity_key", item.Key),
		zap.Int("status", resp.StatusCode), zap.Duration("duration", time.Since(start)))
	return res, nil
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the whole
// URL, keeping the cause.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
