package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// identRe is what a column name may look like (the same rule package jobs
// applies to configured columns).
var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// template is a parsed "{column}-{column}" string.
type template struct {
	parts []part
}

// part is a literal (column == "") or a placeholder.
type part struct {
	literal string
	column  string
}

// parseTemplate parses s. "{{" and "}}" are literal braces; a placeholder is
// a column name in braces. A template without placeholders is an error: it
// is a constant.
func parseTemplate(s string) (*template, error) {
	t := &template{}
	var lit strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "{{"):
			lit.WriteByte('{')
			i += 2
		case strings.HasPrefix(s[i:], "}}"):
			lit.WriteByte('}')
			i += 2
		case s[i] == '}':
			return nil, fmt.Errorf("unmatched %q at offset %d (write %q for a literal brace)", "}", i, "}}")
		case s[i] == '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed %q at offset %d", "{", i)
			}
			name := s[i+1 : i+1+end]
			if !identRe.MatchString(name) {
				return nil, fmt.Errorf("placeholder {%s} at offset %d is not a column name", name, i)
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, part{literal: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, part{column: name})
			i += end + 2
		default:
			lit.WriteByte(s[i])
			i++
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, part{literal: lit.String()})
	}
	if len(t.columns()) == 0 {
		return nil, errors.New("references no column: use const for a fixed value")
	}
	return t, nil
}

// columns returns the placeholders' columns, in order.
func (t *template) columns() []string {
	var cols []string
	for _, p := range t.parts {
		if p.column != "" {
			cols = append(cols, p.column)
		}
	}
	return cols
}

// render fills the placeholders from row, each value rendered as by
// format "string". It reports the first column missing from the row, or
// null when a placeholder's value is null: a string built from a missing
// value would be wrong, not empty.
func (t *template) render(row map[string]any) (s string, null bool, missing string, err error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.column == "" {
			b.WriteString(p.literal)
			continue
		}
		raw, ok := row[p.column]
		if !ok {
			return "", false, p.column, nil
		}
		v, err := normalize(raw)
		if err != nil {
			return "", false, "", fmt.Errorf("template column %q: %w", p.column, err)
		}
		if v == nil {
			null = true
			continue
		}
		str, err := toString(v)
		if err != nil {
			return "", false, "", fmt.Errorf("template column %q: %w", p.column, err)
		}
		b.WriteString(str)
	}
	if null {
		return "", true, "", nil
	}
	return b.String(), false, "", nil
}
