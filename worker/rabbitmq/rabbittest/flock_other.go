//go:build !unix

package rabbittest

import "os"

// tryLock is a no-op where flock is not available: tests then run unguarded.
func tryLock(*os.File, bool) (bool, error) { return true, nil }

func unlock(*os.File) error { return nil }
