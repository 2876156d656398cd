package sharedload

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestSharedAndAbandoned(t *testing.T) {
	life, stop := context.WithCancel(context.Background())
	defer stop()
	g := New[int](life)
	var runs atomic.Int32
	release := make(chan struct{})
	load := func(ctx context.Context) (int, error) {
		runs.Add(1)
		<-release
		return 42, nil
	}
	// A waiter that gives up does not cancel the load for the other.
	quitter, quit := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := g.Do(quitter, "k", load); gaveUp <- err }()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	quit()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the abandoning waiter got %v", err)
	}
	// The load goes on: a new waiter joins it rather than starting another.
	time.AfterFunc(50*time.Millisecond, func() { close(release) })
	if v, err := g.Do(context.Background(), "k", load); err != nil || v != 42 || runs.Load() != 1 {
		t.Fatalf("got %d, %v after %d loads, want 42 after 1", v, err, runs.Load())
	}
}

func TestLifetimeCancelsLoad(t *testing.T) {
	life, stop := context.WithCancel(context.Background())
	g := New[int](life)
	done := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), "k", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
		done <- err
	}()
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the load outlived its lifetime")
	}
}
