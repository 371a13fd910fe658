#!/usr/bin/env python3
"""A discrete-event model of loadtest/adaptive.sh, for choosing the adaptive controller's
constants before a real run (each real run takes minutes; the model takes a second).

The mailbox is the knee upstream (`usher-loadtest upstream --capacity C --base-ms B`): a
request's latency is B x max(1, in_flight / C), fixed when it starts, and past 4 x C in
flight it is refused. usher's admitter grants every 200 ms; a granted visitor hears of it at
its next poll (every 2 s x U(0.8, 1.2), so after U(0, 2.4) s), then makes 3 requests, each
after a think of 0.5 s. The controller is judged every period on the answers of that period,
its quantile read from the same 20 %-wide buckets as src/room/adaptive.rs. It is a model:
no CPU, no network, no polls of the waiting; it reproduced the measured run of the earlier
controller (p99 272-397 ms over six seeds against 329 ms measured; 94 % of the capacity from
60 s on against 93.7 %), and it is used for comparisons, the real runs for figures.

    python3 loadtest/model/adaptive_model.py          # every comparison BENCHMARKS.md cites
"""
import collections
import heapq
import math
import random

BUCKET = 1.2


def bucketed(seconds):
    """The upper edge of the latency's bucket, as `Answers::period` reads it."""
    ms = seconds * 1000
    i = 0 if ms <= 1 else min(59, math.ceil(math.log(ms) / math.log(BUCKET)))
    return BUCKET ** i / 1000


def period_of(latencies, errors, quantile):
    if not latencies:
        return 0, errors, None
    b = sorted(bucketed(l) for l in latencies)
    return len(b), errors, b[max(1, math.ceil(quantile * len(b))) - 1]


class Controller:
    """src/room/adaptive.rs's Controller, with switches for the variants compared."""

    def __init__(self, rate, target=0.25, lo=640, hi=64000, period=2.0, floor_lines=True,
                 at_floor=1.1, queued=2.0, growth=0.05, slow_start=None, memory="all"):
        self.rate, self.target, self.lo, self.hi = rate, target, lo, hi
        self.cooling, self.ceiling = 0, 0.0
        self.floor_lines, self.at_floor, self.queued = floor_lines, at_floor, queued
        self.growth, self.slow_start, self.memory = growth, slow_start, memory
        self.recent = collections.deque(maxlen=max(1, math.ceil(150 / period)))
        self.starting = slow_start is not None

    def step(self, period):
        answers, errors, latency = period
        t = self.target
        if answers >= 20 and latency is not None:
            self.recent.append(latency)
        floor = min(self.recent) if self.recent else t
        latency = latency or 0.0
        if self.floor_lines:
            grow_below = min(max(self.at_floor * floor, floor + 0.010), 0.8 * t)
            cut_above = min(max(self.queued * floor, floor + 0.050), t)
        else:
            grow_below, cut_above = 0.8 * t, t
        if self.starting and answers >= 20 and latency > grow_below:
            self.starting = False
        cooling, before = self.cooling > 0, self.rate
        if answers < 20:
            reason = "few"
        elif errors > 0.01 * answers and not cooling:
            self.rate *= 0.7
            reason = "errors"
        elif latency > cut_above and (not cooling or latency >= 2 * cut_above):
            self.rate *= max(0.5 + 0.5 * cut_above / latency, 0.5)
            reason = "latency"
        elif errors > 0.01 * answers or latency > cut_above or (cooling and latency < grow_below):
            reason = "cooling"
        elif latency < grow_below:
            probing = self.ceiling > 0 and self.rate >= 0.9 * self.ceiling
            growth = self.slow_start if self.starting else self.growth
            self.rate += max(self.rate * (0.01 if probing else growth), 1)
            if self.rate > 1.1 * self.ceiling:
                self.ceiling = 0.0
            reason = "headroom"
        else:
            reason = "steady"
        if reason in ("errors", "latency"):
            self.cooling = 2
            self.starting = False
            if self.memory == "all" or reason == "errors":
                self.ceiling = before
        else:
            self.cooling = max(0, self.cooling - 1)
        self.rate = min(max(self.rate, self.lo), self.hi)
        return self.rate


def simulate(make, visitors=15000, over=10.0, workers=32, base=0.1, period=2.0, limit=200.0,
             seed=1, capacity_at=None, quantile=0.99):
    """One run; `make(start)` builds the controller (start: a third of the capacity)."""
    rnd = random.Random(seed)
    capacity = 60 * workers / base / 3
    arrivals = sorted(rnd.uniform(0, over) for _ in range(visitors))
    controller = make(capacity / 3)
    rate = controller.rate
    events, seq = [], 0

    def push(t, kind, data=None):
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, data))

    def workers_at(t):
        return capacity_at(t) if capacity_at else workers

    in_flight, latencies, refused, answers, errors_now = 0, [], 0, [], 0
    waiting, arrived, owed, grants = 0, 0, 0.0, []
    push(0.2, "tick")
    push(period, "period")
    while events:
        t, _, kind, data = heapq.heappop(events)
        if t > limit:
            break
        if kind == "tick":
            while arrived < visitors and arrivals[arrived] <= t:
                waiting, arrived = waiting + 1, arrived + 1
            owed += rate / 60 * 0.2
            n = min(int(owed), waiting)
            owed -= int(owed)
            waiting -= n
            for _ in range(n):
                grants.append(t)
                push(t + rnd.uniform(0, 2 * rnd.uniform(0.8, 1.2)) + 0.5, "request", 3)
            if arrived < visitors or waiting:
                push(t + 0.2, "tick")
        elif kind == "request":
            in_flight += 1
            if in_flight > 4 * workers_at(t):
                in_flight -= 1
                refused += 1
                errors_now += 1
                answers.append(0.0)
                if data > 1:
                    push(t + 0.5, "request", data - 1)
            else:
                took = base * max(1.0, in_flight / workers_at(t))
                push(t + took, "answer", (data, took))
        elif kind == "answer":
            in_flight -= 1
            left, took = data
            latencies.append(took)
            answers.append(took)
            if left > 1:
                push(t + 0.5, "request", left - 1)
        elif kind == "period":
            rate = controller.step(period_of(answers, errors_now, quantile))
            answers, errors_now = [], 0
            if events:
                push(t + period, "period")
    latencies.sort()
    end = grants[-1] if grants else 1.0
    steady = [g for g in grants if g >= 60]
    return {
        "p99_ms": round(1000 * latencies[math.ceil(0.99 * len(latencies)) - 1]) if latencies else 0,
        "refused_pct": round(100 * refused / max(1, len(latencies) + refused), 2),
        "of_capacity_pct": round(100 * len(grants) / (end / 60) / capacity, 1),
        "from_60s_pct": round(100 * len(steady) / ((end - 60) / 60) / capacity, 1) if end > 60 else 0.0,
    }


def compare(name, make, seeds=6, **run):
    results = [simulate(make, seed=s, **run) for s in range(seeds)]
    p99 = [r["p99_ms"] for r in results]
    print(f"{name:58} p99 {min(p99)}-{max(p99)} ms, refused <= {max(r['refused_pct'] for r in results)} %, "
          f"capacity >= {min(r['of_capacity_pct'] for r in results)} % over the run, "
          f">= {min(r['from_60s_pct'] for r in results)} % from 60 s")


if __name__ == "__main__":
    long_line = dict(visitors=45000, over=30.0, limit=500.0, seeds=3)
    half_for_50s = dict(capacity_at=lambda t: 16 if 60 <= t < 110 else 32, seeds=4)
    print("32 workers at 100 ms (6,400 admissions a minute), 15,000 within 10 s, p99 target 250 ms:")
    compare("target lines only (the earlier controller)", lambda r: Controller(r, floor_lines=False))
    compare("floor lines (the controller now)", lambda r: Controller(r))
    compare("floor lines, growth 8 % a period", lambda r: Controller(r, growth=0.08))
    for s in (0.10, 0.15, 0.25):
        compare(f"floor lines, slow start {s:.0%} until off the floor", lambda r, s=s: Controller(r, slow_start=s))
    compare("floor lines, growth line 1.25 x the floor", lambda r: Controller(r, at_floor=1.25))
    print("a target of 400 ms (where the mailbox starts refusing):")
    compare("target lines only", lambda r: Controller(r, target=0.4, floor_lines=False))
    compare("floor lines", lambda r: Controller(r, target=0.4))
    print("45,000 within 30 s:")
    compare("floor lines, probe memory after every cut (now)", lambda r: Controller(r), **long_line)
    compare("floor lines, probe memory after error cuts only", lambda r: Controller(r, memory="errors"), **long_line)
    print("half the workers gone from 60 s to 110 s:")
    compare("floor lines, probe memory after every cut (now)", lambda r: Controller(r), **half_for_50s)
    compare("floor lines, probe memory after error cuts only", lambda r: Controller(r, memory="errors"),
            **half_for_50s)
