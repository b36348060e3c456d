#!/usr/bin/env python3
"""2,000 random 4 KiB preads of a file (seeded, so every tool reads the same offsets).
Prints the median and 99th percentile latency in milliseconds."""
import os, random, statistics, sys, time

path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
rng = random.Random(42)
times = []
for _ in range(2000):
    offset = rng.randrange(0, max(1, size - 4096)) & ~4095
    start = time.perf_counter()
    os.pread(fd, 4096, offset)
    times.append((time.perf_counter() - start) * 1000)
times.sort()
print(f"{statistics.median(times):.2f} {times[int(len(times) * 0.99)]:.2f}")
