"""Times edit → pushed under `layerup watch`: from the write of a file to the pushed reference
on stdout. Usage: watch_edit.py RUNS EDITED_FILE... -- LAYERUP WATCH-ARGS...

Each run writes every EDITED_FILE at once, then waits for one new stdout line per file's image
(so with several images, until all have pushed). Prints one line: the median and each run in
seconds. The first push (the full one) is waited for and not timed."""
import os, signal, statistics, subprocess, sys, time

runs = int(sys.argv[1])
split = sys.argv.index("--")
files, cmd = sys.argv[2:split], sys.argv[split + 1 :]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
first = len(files)
for _ in range(first):
    if not p.stdout.readline():
        sys.exit("watch ended before its first push")
times = []
for i in range(runs):
    time.sleep(0.5)
    t0 = time.monotonic()
    for f in files:
        with open(f, "a") as fh:
            fh.write(f"// edit {i}\n")
    for _ in files:
        if not p.stdout.readline():
            sys.exit("watch ended")
    times.append(time.monotonic() - t0)
p.send_signal(signal.SIGINT)
p.wait(timeout=30)
print(f"{statistics.median(times):.3f} " + " ".join(f"{t:.3f}" for t in times))
