package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/revsync/revsync/jobs"
)

// placeholderRe is what a placeholder's name may look like.
var placeholderRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// pathTemplate is a URL path with {field} placeholders, such as
// "/customers/{id}".
type pathTemplate struct {
	src   string
	parts []pathPart
}

// pathPart is a literal piece of path (name == "") or a placeholder.
type pathPart struct {
	literal string
	name    string
}

// parsePathTemplate parses and checks a path template: balanced braces,
// valid placeholder names, and a relative path with no scheme, host, query
// or fragment. A leading "/" is added when missing.
func parsePathTemplate(src string) (*pathTemplate, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("missing")
	}
	if strings.Contains(src, "://") || strings.HasPrefix(src, "//") {
		return nil, fmt.Errorf("%q: want a path relative to base_url, not a URL", src)
	}
	s := src
	if !strings.HasPrefix(s, "/") {
		s = "/" + s
	}
	t := &pathTemplate{src: src}
	var probe strings.Builder // s with every placeholder replaced by "x"
	for s != "" {
		open := strings.IndexAny(s, "{}")
		if open < 0 {
			t.parts = append(t.parts, pathPart{literal: s})
			probe.WriteString(s)
			break
		}
		if s[open] == '}' {
			return nil, fmt.Errorf("%q: unmatched %q", src, "}")
		}
		if open > 0 {
			t.parts = append(t.parts, pathPart{literal: s[:open]})
			probe.WriteString(s[:open])
		}
		end := strings.IndexAny(s[open+1:], "{}")
		if end < 0 || s[open+1+end] != '}' {
			return nil, fmt.Errorf("%q: unclosed %q", src, "{")
		}
		name := s[open+1 : open+1+end]
		if !placeholderRe.MatchString(name) {
			return nil, fmt.Errorf("%q: placeholder {%s} is not a field name", src, name)
		}
		t.parts = append(t.parts, pathPart{name: name})
		probe.WriteString("x")
		s = s[open+end+2:]
	}
	p := probe.String()
	u, err := url.Parse(p)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q: not a URL path: %v", src, err)
	case u.Scheme != "" || u.Host != "" || u.Opaque != "":
		return nil, fmt.Errorf("%q: want a path relative to base_url, not a URL", src)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(p, "#"):
		return nil, fmt.Errorf("%q: want a path only, without query or fragment", src)
	}
	return t, nil
}

// expand fills the placeholders from the item: a top-level field first,
// then an identifier column of the same name. Each value is path-escaped.
// A placeholder it cannot fill is a permanent error.
func (t *pathTemplate) expand(item *jobs.Item) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.literal)
			continue
		}
		s, err := placeholderValue(item, p.name)
		if err != nil {
			return "", jobs.Permanent(fmt.Errorf("URL template %q: %w", t.src, err))
		}
		b.WriteString(url.PathEscape(s))
	}
	return b.String(), nil
}

func placeholderValue(item *jobs.Item, name string) (string, error) {
	v, ok := item.Fields[name]
	if !ok || isNil(v) {
		v, ok = item.Key.Value(name)
	}
	if !ok || isNil(v) {
		return "", fmt.Errorf("no field or key column %q in the item", name)
	}
	s, err := pathValue(v)
	if err != nil {
		return "", fmt.Errorf("field %q: %w", name, err)
	}
	switch s {
	case "":
		return "", fmt.Errorf("field %q is empty: the URL would name the collection", name)
	case ".", "..":
		return "", fmt.Errorf("field %q is %q: not usable in a URL path", name, s)
	}
	return s, nil
}

// pathValue renders a scalar for a URL path.
func pathValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			break
		}
		return strconv.FormatFloat(float64(x), 'f', -1, 32), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			break
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case fmt.Stringer:
		return x.String(), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.String:
		return rv.String(), nil
	}
	return "", fmt.Errorf("value of type %T is not a scalar", v)
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
