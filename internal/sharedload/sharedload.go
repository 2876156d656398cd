// Package sharedload runs a load once for every concurrent caller that asks
// for the same key, on a lifetime context of its own: a caller that gives up
// (its request was interrupted) stops waiting without failing the load for
// the others, and the load itself ends when the lifetime does (at unmount).
// It knows nothing of what is loaded.
package sharedload

import (
	"context"

	"golang.org/x/sync/singleflight"
)

// Group shares loads by key. The zero value is not usable: make it with New.
type Group[T any] struct {
	life context.Context
	sf   singleflight.Group
}

// New returns a Group whose loads run on life: cancelling life cancels
// every load in progress.
func New[T any](life context.Context) *Group[T] {
	return &Group[T]{life: life}
}

// Do returns the result of load for key, running it unless a load of key is
// already in progress, in which case it waits for that one. load gets the
// group's lifetime context, not ctx: ctx bounds only this caller's wait.
func (g *Group[T]) Do(ctx context.Context, key string, load func(ctx context.Context) (T, error)) (T, error) {
	ch := g.sf.DoChan(key, func() (any, error) { return load(g.life) })
	select {
	case r := <-ch:
		v, _ := r.Val.(T)
		return v, r.Err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
