package boltstore

import (
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestTmpSplit(t *testing.T) {
	path := os.Getenv("SPLITPATH")
	if path == "" {
		t.Skip()
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	t0 := time.Now()
	if err := checkStructure(f); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	opts, _ := boltOptions(f)
	db, err := bolt.Open(path, 0600, opts)
	if err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	err = db.View(func(tx *bolt.Tx) error { return checkContents(tx, bootID()) })
	t3 := time.Now()
	t.Logf("walk %v, bolt open %v, contents %v (%v)", t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), err)
	db.Close()
}

func TestTmpBuild(t *testing.T) {
	path := os.Getenv("BUILDPATH")
	if path == "" {
		t.Skip()
	}
	buildScaleFile(t, path)
}
