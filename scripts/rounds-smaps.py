"""Runs `uring-comet loadtest ARGS` (a --rounds job) and, each time a round prints its
RSS after close, writes the server's /proc/PID/smaps Rss per mapping, and what changed
since the last round, to rounds-smaps-PID.txt: which mapping grows ([heap], a thread's
malloc arena (a 64 MiB-aligned anonymous mapping), a stack, a file faulted in late).
Binary: $URING_COMET (default target/release/uring-comet)."""
import subprocess, sys, re, os, collections
args = sys.argv[1:]
out = open('rounds-smaps-%d.txt' % os.getpid(), 'w')
p = subprocess.Popen([os.environ.get('URING_COMET', 'target/release/uring-comet'), 'loadtest'] + args,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
def children(pid):
    try:
        return [int(x) for x in open(f'/proc/{pid}/task/{pid}/children').read().split()]
    except Exception:
        return []
def smaps(pid):
    res = collections.OrderedDict()
    cur = None
    for line in open(f'/proc/{pid}/smaps'):
        if re.match(r'^[0-9a-f]+-[0-9a-f]+ ', line):
            parts = line.split()
            rng = parts[0]
            name = parts[5] if len(parts) > 5 else '[anon]'
            cur = rng + ' ' + name
            res[cur] = 0
        elif line.startswith('Rss:'):
            res[cur] = int(line.split()[1])
    return res
prev = None
for line in p.stdout:
    print(line, end='', flush=True); out.write(line); out.flush()
    if 'RSS after close' in line:
        kids = children(p.pid)
        if not kids: continue
        s = smaps(kids[0])
        tot = sum(s.values())
        out.write(f'== total {tot} kB\n')
        if prev is not None:
            for k, v in s.items():
                d = v - prev.get(k, 0)
                if d: out.write(f'   {d:+6d} kB  {v:7d}  {k}\n')
            for k in prev:
                if k not in s: out.write(f'   gone {prev[k]} {k}\n')
        prev = s
        out.flush()
p.wait()
