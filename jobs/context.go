package jobs

import (
	"fmt"
	"maps"
	"strings"
)

// Op is what happened to the entity.
type Op string

// The operations an entity-changed event can carry.
const (
	OpUpsert Op = "upsert" // created or updated: export its current state
	OpDelete Op = "delete" // deleted: remove it from the remote
)

// Valid reports whether op is a known operation.
func (op Op) Valid() bool { return op == OpUpsert || op == OpDelete }

// KeyPart is one column of an entity identifier and its value. Values are
// strings or integers (int64); they only ever travel to the database as bind
// parameters.
type KeyPart struct {
	Column string
	Value  any
}

// IDFilter names one entity by its identifier: one KeyPart per identifier
// column, in the connector's column order. Composite keys have several parts.
type IDFilter []KeyPart

// Value returns the value of column and whether the filter has it.
func (f IDFilter) Value(column string) (any, bool) {
	for _, p := range f {
		if p.Column == column {
			return p.Value, true
		}
	}
	return nil, false
}

// Columns returns the identifier columns, in order.
func (f IDFilter) Columns() []string {
	cols := make([]string, len(f))
	for i, p := range f {
		cols[i] = p.Column
	}
	return cols
}

// String renders the filter as "col=value,col=value", the entity key used in
// logs.
func (f IDFilter) String() string {
	var b strings.Builder
	for i, p := range f {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%v", p.Column, p.Value)
	}
	return b.String()
}

// Context is what one job run knows about the event that started it: which
// integration and connector, which entity (the ID filter), the operation, and
// the parameters. It is the Oro "job context" with its ID filter.
type Context struct {
	Integration string
	Connector   string
	Job         string
	Entity      string   // schema-qualified table, for logs
	IDFilter    IDFilter // the entity's identifier
	Op          Op
	// Parameters are the connector's configured parameters overlaid with the
	// message's own: the caller's parameters win.
	Parameters map[string]any
	MessageID  string
	Attempt    int // 1 for the first delivery

	step *StepExecution // the step being run, for Warn
}

// MergeParameters returns the connector's defaults overlaid by the caller's
// parameters; neither map is modified.
func MergeParameters(defaults, caller map[string]any) map[string]any {
	merged := make(map[string]any, len(defaults)+len(caller))
	maps.Copy(merged, defaults)
	maps.Copy(merged, caller)
	return merged
}
