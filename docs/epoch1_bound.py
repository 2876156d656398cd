#!/usr/bin/python3
"""What epoch 1 of a shuffled training loop can reach, for readahead that
does not know the order.

An optimistic model of the shared WAN harness's default workload
(../shared/bench/workload.py: one reader visits the slabs of a store in a
seeded random order and decodes each before asking for the next), used in
docs/benchmarks.md to explain why the 90%-of-the-link target of issue 5 is
out of reach at 400 Mbit/s for any readahead that cannot see the order.

The model is kinder to the readahead than any real one can be:
  - the link is busy from the moment the reader opens the store and delivers
    whole slabs back to back at the rate one download measures;
  - a slab the reader asks for and does not have jumps every queue: it is the
    next one the link completes, with no request round trip;
  - decoding a slab costs what `local` spends per slab in epoch 2 (page cache
    warm), not epoch 1.
The background fill goes in a fixed order (by symmetry, which fixed order does
not matter when the reader's order is uniformly random). Epoch 1 ends when the
reader has decoded its last slab; % link is the harness's: stored bytes /
nominal rate / epoch seconds. A second table feeds the model zarrfs's own
measured numbers, to check it against the harness.

    /usr/bin/python3 docs/epoch1_bound.py
"""
import random
import statistics


def epoch1(slabs, slab_s, decode_s, order, start_s=0.0, rtt_s=0.0):
    """Seconds until the reader has decoded every slab, for one reader order.

    The link starts at start_s; a slab the reader misses is asked for with
    one round trip of rtt_s and then takes the link's next free slot."""
    done_at = [start_s + (k + 1) * slab_s for k in range(slabs)]  # the link's completion slots
    arrival = {}  # slab -> when it is on disk
    taken = [False] * slabs
    fill = iter(range(slabs))

    def fill_until(t):
        # The fill takes every free slot that completes by t.
        for k in range(slabs):
            if done_at[k] > t:
                return
            if not taken[k]:
                s = next((s for s in fill if s not in arrival), None)
                if s is None:
                    return
                arrival[s] = done_at[k]
                taken[k] = True

    t = 0.0
    for s in order:
        fill_until(t)
        if s not in arrival:
            # A miss: the first free slot that can end a whole slab after the
            # request reaches the origin (near the end, the last one, late).
            ready = t + rtt_s + slab_s
            free = [k for k in range(slabs) if not taken[k]]
            k = next((k for k in free if done_at[k] >= ready - 1e-9), free[-1])
            fill_until(done_at[k] - 1e-9)
            if s not in arrival:
                arrival[s] = max(done_at[k], ready)
                taken[k] = True
        t = max(t, arrival[s]) + decode_s
    return max(t, done_at[-1])


def bound(slabs, stored_mb, nominal_mbps, link_share, decode_s, start_s=0.0, rtt_s=0.0, runs=400):
    rate = nominal_mbps * link_share  # MB/s one download gets
    slab_s = stored_mb / rate / slabs
    e1s = []
    for seed in range(runs):
        order = list(range(slabs))
        random.Random(seed).shuffle(order)
        e1s.append(epoch1(slabs, slab_s, decode_s, order, start_s, rtt_s))
    e1 = statistics.mean(e1s)
    return e1, 100 * stored_mb / nominal_mbps / e1, stored_mb / rate


# The harness's stores and this machine's measurements (docs/benchmarks.md):
# slabs, stored MB, `local`'s epoch 2 seconds, and `local`'s first batch
# seconds less one slab's decode: the open, before the first chunk is asked
# for (xarray's open of climate costs 0.6 s of CPU).
STORES = {"images": (80, 102.4, 0.30, 0.08), "climate": (183, 202.0, 1.37, 0.60),
          # issue 14's long epoch, and many small files (a slab of
          # climate_tiles is one time chunk's 12 tiles, 4 per variable)
          "images_big": (800, 1023.6, 3.47, 0.08), "climate_tiles": (183, 101.7, 2.10, 0.60)}
# Orders simulated per store (the model is quadratic in the slabs).
RUNS = {"images_big": 20}
# The same for zarrfs as measured at 400 Mbit/s: its epoch 2 seconds (reads
# through FUSE), its open, and how long a miss waits while the fill runs.
ZARRFS = {"images": (0.35, 0.12, 0.13), "climate": (1.90, 0.80, 0.13)}
# nominal MB/s, the share of it one download gets (the harness's link check),
# round trip seconds.
LINKS = {"400 Mbit/s": (50.0, 0.94, 0.040), "100 Mbit/s": (12.5, 0.95, 0.100)}

if __name__ == "__main__":
    print("| link | store | link time s | A: epoch 1 s | A: % link | B: epoch 1 s | B: % link |")
    print("|---|---|---|---|---|---|---|")
    for link, (nominal, share, rtt) in LINKS.items():
        for name, (slabs, mb, e2, open_s) in STORES.items():
            decode = e2 / slabs
            # A: the link busy from the open on, misses served with no round trip.
            runs = RUNS.get(name, 400)
            e1a, pcta, link_s = bound(slabs, mb, nominal, share, decode, runs=runs)
            # B: the link starts with the reader's first chunk; a miss costs a round trip.
            e1b, pctb, _ = bound(slabs, mb, nominal, share, decode, open_s, rtt, runs=runs)
            print(f"| {link} | {name} | {link_s:.2f} | {e1a:.2f} | {pcta:.0f} | {e1b:.2f} | {pctb:.0f} |")
    # C: the model fed zarrfs's own numbers, to check it against the harness;
    # and the same with misses that cost only a round trip (strict priority).
    print()
    print("| link | store | C: epoch 1 s | C: % link | C with strict priority: % link |")
    print("|---|---|---|---|---|")
    nominal, share, rtt = LINKS["400 Mbit/s"]
    for name, (e2, open_s, miss_s) in ZARRFS.items():
        slabs, mb, _, _ = STORES[name]
        e1c, pctc, _ = bound(slabs, mb, nominal, share, e2 / slabs, open_s, miss_s)
        _, pctp, _ = bound(slabs, mb, nominal, share, e2 / slabs, open_s, rtt)
        print(f"| 400 Mbit/s | {name} | {e1c:.2f} | {pctc:.0f} | {pctp:.0f} |")
