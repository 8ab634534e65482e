package rabbittest

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// LockPath is the file the machine-wide broker fault lock is taken on.
var LockPath = filepath.Join(os.TempDir(), "revsync-broker-fault.lock")

// LockTimeout bounds how long Shared and Exclusive wait for the lock before
// failing the test. Fault tests restart the broker application, which takes
// tens of seconds, and several may be queued, so it is generous.
var LockTimeout = 10 * time.Minute

// Shared takes the broker lock in shared mode for the rest of the test (it is
// released in t.Cleanup). Every test that uses the broker without injecting
// faults calls it first, so it never runs while a fault test holds the
// exclusive lock. Within a test (or a subtest of one) that already holds the
// exclusive lock it does nothing, so test helpers may call it
// unconditionally.
func Shared(t testing.TB) {
	t.Helper()
	lock(t, false)
}

// Exclusive takes the broker lock in exclusive mode for the rest of the test
// (it is released in t.Cleanup). Every test that stops the broker application,
// closes connections on the broker or raises resource alarms calls it first,
// before anything that calls Shared. Such a test restores the broker in its
// own t.Cleanup, registered after Exclusive so that it runs before the lock is
// released. Calling it in a test that holds the shared lock fails the test:
// the two would wait for each other.
func Exclusive(t testing.TB) {
	t.Helper()
	lock(t, true)
}

// Lock is Exclusive under the name the team notes use (brokerfault.Lock).
func Lock(t testing.TB) {
	t.Helper()
	lock(t, true)
}

// held records the tests of this process holding a lock, by name: true for
// exclusive. A subtest's name extends its parent's with "/".
var (
	heldMu sync.Mutex
	held   = map[string]bool{}
)

// holder returns the mode of the lock held by t or one of its parents.
func holder(name string) (exclusive, ok bool) {
	heldMu.Lock()
	defer heldMu.Unlock()
	for n := name; ; {
		if ex, ok := held[n]; ok {
			return ex, true
		}
		i := strings.LastIndexByte(n, '/')
		if i < 0 {
			return false, false
		}
		n = n[:i]
	}
}

func lock(t testing.TB, exclusive bool) {
	t.Helper()
	switch ex, ok := holder(t.Name()); {
	case ok && ex:
		return // exclusive covers everything
	case ok && exclusive:
		t.Fatalf("rabbittest: %s takes the exclusive broker lock while holding the shared one: call Exclusive first", t.Name())
	}
	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("rabbittest: open lock file %s: %v", LockPath, err)
	}
	deadline := time.Now().Add(LockTimeout)
	for {
		ok, err := tryLock(f, exclusive)
		if err != nil {
			_ = f.Close()
			t.Fatalf("rabbittest: lock %s: %v", LockPath, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			t.Fatalf("rabbittest: broker lock %s not obtained within %s", LockPath, LockTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	name := t.Name()
	heldMu.Lock()
	_, again := held[name]
	if !again {
		held[name] = exclusive
	}
	heldMu.Unlock()
	t.Cleanup(func() {
		if !again {
			heldMu.Lock()
			delete(held, name)
			heldMu.Unlock()
		}
		_ = unlock(f)
		_ = f.Close()
	})
}
