package postgres

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a pool's goroutines behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
