package rabbittest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLockModes(t *testing.T) {
	LockPath = filepath.Join(t.TempDir(), "lock")
	t.Cleanup(func() { LockPath = filepath.Join(os.TempDir(), "revsync-broker-fault.lock") })

	open := func() *os.File {
		f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o666)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	a, b := open(), open()

	ok, err := tryLock(a, false)
	require.NoError(t, err)
	require.True(t, ok, "first shared lock")
	ok, err = tryLock(b, false)
	require.NoError(t, err)
	require.True(t, ok, "shared locks coexist")
	require.NoError(t, unlock(b))
	ok, err = tryLock(b, true)
	require.NoError(t, err)
	require.False(t, ok, "exclusive waits for shared holders")
	require.NoError(t, unlock(a))
	ok, err = tryLock(b, true)
	require.NoError(t, err)
	require.True(t, ok, "exclusive once shared released")
	ok, err = tryLock(a, false)
	require.NoError(t, err)
	require.False(t, ok, "shared waits for exclusive holder")
	require.NoError(t, unlock(b))

	t.Run("Shared and Exclusive release in cleanup", func(t *testing.T) {
		t.Run("shared", func(t *testing.T) { Shared(t) })
		t.Run("exclusive", func(t *testing.T) { Exclusive(t) })
		t.Run("lock", func(t *testing.T) { Lock(t) })
	})
}

func TestSharedInsideExclusive(t *testing.T) {
	LockPath = filepath.Join(t.TempDir(), "lock")
	t.Cleanup(func() { LockPath = filepath.Join(os.TempDir(), "revsync-broker-fault.lock") })
	Exclusive(t)
	Shared(t) // a no-op: would otherwise wait for the test's own lock
	t.Run("subtest", func(t *testing.T) { Shared(t) })

	f, err := os.OpenFile(LockPath, os.O_RDWR|os.O_CREATE, 0o666)
	require.NoError(t, err)
	defer f.Close()
	ok, err := tryLock(f, false)
	require.NoError(t, err)
	require.False(t, ok, "still held exclusively")
}
