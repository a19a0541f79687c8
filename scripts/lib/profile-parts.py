#!/usr/bin/env python3
"""A compute node's CPU per call, by the part of its work each sample was in.

    perf script -F tid,ip,sym -i node.data | profile-parts.py CALLS HZ

Reads `perf script` output of a node recorded with call graphs (DWARF
unwinding sees through frames without frame pointers) at HZ samples a
second while it answered CALLS calls, and prints microseconds per call
for each part. A sample counts for the first part, in the order below,
that any frame of its stack matches: the guest call before the request
that runs it, the request before the task that polls it.
"""

import collections
import sys

# (part, substrings of a frame's symbol)
PARTS = [
    ("guest call (wasmtime)", ["ComputeModule::compute", "wasmtime", "[JIT]"]),
    ("reply publish (lapin)", ["Channel::basic_publish"]),
    (
        "ack (lapin)",
        ["Acker::", "InternalRPCHandle::send", "Channel::basic_ack", "Channel::basic_nack", "Channel::basic_reject"],
    ),
    ("request bookkeeping", ["node::request::"]),
    ("consumer loop", ["node::consumer::", "Instrumented<"]),
    ("lapin I/O thread", ["IoLoop"]),
    ("lapin internal task", ["InternalRPC<"]),
    ("tokio idle (parking, waking)", ["park"]),
    ("tokio scheduler", ["tokio::runtime"]),
    ("epoch ticker", ["clock_nanosleep", "epoch"]),
]


def stacks(lines):
    """Each sample's frames, leaf first."""
    frames = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = None
        elif line[0] in "\t ":
            parts = line.split(None, 1)
            if frames is not None:
                frames.append(parts[-1])
        else:
            frames = []
    if frames:
        yield frames


def part(frames):
    for name, keys in PARTS:
        if any(key in frame for frame in frames for key in keys):
            return name
    return "other"


def main():
    calls, hz = int(sys.argv[1]), float(sys.argv[2])
    counts = collections.Counter(part(frames) for frames in stacks(sys.stdin))
    per_call = lambda samples: samples * 1e6 / hz / calls
    for name in [name for name, _ in PARTS] + ["other"]:
        print(f"  {name:<30} {per_call(counts[name]):7.1f} us")
    print(f"  {'all':<30} {per_call(sum(counts.values())):7.1f} us a call, as sampled")


if __name__ == "__main__":
    main()
