#!/usr/bin/env python3
"""spamscope against the seed detector, side by side in one run (`make bench`).

The seed (Asapin/alkonost's detector core, unmodified, in ../shared/seed-bench
when it is there) is built with its own harness, the repeated inputs are
written by the seed bench's make_repeated.py, and every workload is run by
both tools in turn, alternating which goes first, ROUNDS times. Printed:
the median of each figure and the ratio spamscope / seed (above 1: spamscope
is faster). Only figures of one run are compared; the machine is noisy.

Workloads:
  detector loop, one stream   xqcow x200 and chilledcow x500 (make_repeated.py),
                              input parsed before timing: `alk-harness sync F`
                              against `spamscope-bench core F`
  detector loop, many streams criterion's workload: the bundled log N times,
                              each copy a new stream, 10 passes in one process
  whole process               `spamscope replay --json --max-ahead-s 4000000000 F > /dev/null` against
                              `alk-harness sync F` (reading, parsing, detecting),
                              wall time and peak RSS (the kernel's, from wait4)

Without the seed bench it prints one line saying the race was skipped.

usage: seed_race.py [--seed-bench DIR] [--rounds N] [--work DIR]
                    [--spamscope BIN] [--bench BIN] [--only one|many|process]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XQ = os.path.join(ROOT, 'testdata', 'twitch', 'xqcow-2019-09-15.irc')
CC = os.path.join(ROOT, 'testdata', 'youtube', 'chilledcow-2020-11.chat-downloader.json')


def run(cmd, stdout_path=None):
    """Runs cmd; returns (wall seconds, peak RSS MiB, stdout text)."""
    with tempfile.TemporaryFile() as cap:
        out = open(stdout_path, 'wb') if stdout_path else cap
        started = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        # The kernel's peak RSS of exactly this child.
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - started
        err = p.stderr.read().decode(errors='replace')
        p.stderr.close()
        if stdout_path:
            out.close()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f'seed race: {" ".join(cmd)} exited {code}:\n{err[-2000:]}')
        cap.seek(0)
        text = cap.read().decode(errors='replace')
    return wall, usage.ru_maxrss / 1024, text


def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith('{'):
            return json.loads(line)
    sys.exit(f'seed race: no JSON summary in:\n{text[-2000:]}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seed-bench', default=os.path.join(ROOT, '..', 'shared', 'seed-bench'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--work', default=os.path.join(ROOT, 'target', 'seed-race'))
    ap.add_argument('--spamscope', default=os.path.join(ROOT, 'target', 'release', 'spamscope'))
    ap.add_argument('--bench', default=os.path.join(ROOT, 'target', 'release', 'spamscope-bench'))
    ap.add_argument('--only', choices=['one', 'many', 'process'], action='append')
    a = ap.parse_args()
    seed = os.path.abspath(a.seed_bench)
    manifest = os.path.join(seed, 'harness', 'Cargo.toml')
    if not os.path.exists(manifest):
        print(f'seed race: skipped ({seed} is not here: no seed detector to race)')
        return
    for b in (a.spamscope, a.bench):
        if not os.access(b, os.X_OK):
            sys.exit(f'seed race: {b} is not built (cargo build --release -p spamscope -p spamscope-bench)')
    cargo = os.environ.get('CARGO', 'cargo')
    target = os.path.join(ROOT, 'target', 'seed-bench')
    print('seed race: building the seed harness', file=sys.stderr, flush=True)
    subprocess.run([cargo, 'build', '--quiet', '--release', '--manifest-path', manifest,
                    '--target-dir', target], check=True)
    harness = os.path.join(target, 'release', 'alk-harness')
    inputs = os.path.join(a.work, 'inputs')
    xq_big = os.path.join(inputs, 'xqcow-x200.irc')
    cc_big = os.path.join(inputs, 'chilledcow-x500.chat-downloader.json')
    if not (os.path.exists(xq_big) and os.path.exists(cc_big)):
        print('seed race: writing the repeated inputs', file=sys.stderr, flush=True)
        subprocess.run([sys.executable, os.path.join(seed, 'make_repeated.py'), inputs, '200', '500'],
                       check=True, stdout=subprocess.DEVNULL)

    only = set(a.only or ['one', 'many', 'process'])
    # name, kind, seed command, spamscope command
    work = []
    if 'one' in only:
        for name, f in (('xqcow x200, one stream', xq_big), ('chilledcow x500, one stream', cc_big)):
            work.append((f'detector loop: {name}', 'loop', [harness, 'sync', f], [a.bench, 'core', f]))
    if 'many' in only:
        for name, f, copies in (('xqcow x20', XQ, 20), ('chilledcow x56', CC, 56)):
            opts = ['--copies', str(copies), '--passes', '10']
            work.append((f'detector loop: {name}, a stream per copy', 'copies',
                         [harness, 'sync', *opts, f], [a.bench, 'core', *opts, f]))
    if 'process' in only:
        for name, f in (('xqcow x200', xq_big), ('chilledcow x500', cc_big)):
            work.append((f'whole process: {name}', 'process', [harness, 'sync', f],
                         # The repeated inputs run decades past today: every event is replayed,
                         # as the seed harness reads them all.
                         [a.spamscope, 'replay', '--json', '--max-ahead-s', '4000000000', f]))

    results = {w[0]: {'seed': [], 'spamscope': []} for w in work}
    for r in range(a.rounds):
        for name, kind, seed_cmd, ours_cmd in work:
            order = [('seed', seed_cmd), ('spamscope', ours_cmd)]
            if r % 2:
                order.reverse()
            for tool, cmd in order:
                print(f'seed race: round {r + 1}/{a.rounds}: {name}: {tool}', file=sys.stderr, flush=True)
                if kind == 'process' and tool == 'spamscope':
                    wall, rss, _ = run(cmd, stdout_path=os.devnull)
                    s = {'s': wall, 'rss': rss, 'records': None}
                else:
                    wall, rss, text = run(cmd)
                    j = last_json(text)
                    if kind == 'loop':
                        if tool == 'seed':
                            s = {'s': j['core_s'], 'records': j['records']}
                        else:
                            s = {'s': j['median_s'], 'records': j['records_per_pass']}
                    elif kind == 'copies':
                        if tool == 'seed':
                            s = {'s': statistics.median(j['pass_s']), 'records': j['actions_per_pass']}
                        else:
                            s = {'s': j['median_s'], 'records': j['records_per_pass']}
                    else:
                        s = {'s': wall, 'rss': rss, 'records': j['records']}
                results[name][tool].append(s)

    print(f'seed race: {a.rounds} rounds, alternating; medians; ratio = seed time / spamscope time on the '
          'same input (above 1: spamscope faster)')
    print()
    print('| workload | seed | spamscope | ratio |')
    print('|---|---|---|---|')
    for name, kind, _, _ in work:
        seed_runs, ours_runs = results[name]['seed'], results[name]['spamscope']
        seed_s = statistics.median(x['s'] for x in seed_runs)
        ours_s = statistics.median(x['s'] for x in ours_runs)
        if kind == 'process':
            seed_rss = statistics.median(x['rss'] for x in seed_runs)
            ours_rss = statistics.median(x['rss'] for x in ours_runs)
            cell = lambda s, rss: f'{s:.1f} s, peak {rss:,.0f} MiB'
            print(f'| {name} | {cell(seed_s, seed_rss)} | {cell(ours_s, ours_rss)} | '
                  f'{seed_s / ours_s:.2f} (RSS {ours_rss / seed_rss:.2f}x the seed\'s) |')
        else:
            rate = lambda runs, s: f'{statistics.median(x["records"] for x in runs) / s / 1000:,.0f} k ev/s'
            print(f'| {name} | {rate(seed_runs, seed_s)} | {rate(ours_runs, ours_s)} | {seed_s / ours_s:.2f} |')


if __name__ == '__main__':
    main()
