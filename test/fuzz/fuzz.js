// The fuzz driver: runs cases of run-cases.js in child processes, batch by batch, and names every failing case.
// A batch that crashes, hangs or drops lines is run again case by case, each in a child process of its own, so a
// crash names its case. npm test runs a few thousand cases (test/fuzz.test.ts); for a longer run:
//   npm run fuzz -- --cases 200000 --seed 7
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const runner = path.join(__dirname, 'run-cases.js');

function runBatch(seed, first, count, timeoutMs) {
  const r = spawnSync(process.execPath, [runner, String(seed), String(first), String(count)], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 << 20,
  });
  const results = (r.stdout || '')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
  const crashed = r.status !== 0 || results.length !== count;
  const how = r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit ${r.status}`;
  return { results, crashed, how, stderr: (r.stderr || '').slice(-2000) };
}

/** Runs `cases` cases from `seed`; returns { ran, refused, failures: [{ index, name, why }] }. */
function runFuzz({ seed = 1, cases = 3000, batch = 500 } = {}) {
  const failures = [];
  let ran = 0;
  let refused = 0;
  for (let first = 0; first < cases; first += batch) {
    const count = Math.min(batch, cases - first);
    let { results, crashed } = runBatch(seed, first, count, 120_000);
    if (crashed) {
      // Each case alone: the one whose process dies (or hangs) is the culprit.
      results = [];
      for (let i = first; i < first + count; i++) {
        const one = runBatch(seed, i, 1, 30_000);
        if (one.crashed)
          failures.push({
            index: i,
            name: '?',
            why: `the process died or hung (${one.how}): ${one.stderr.trim().split('\n').slice(-3).join(' | ')}`,
          });
        else results.push(...one.results);
      }
    }
    for (const c of results) {
      ran++;
      if (c.refused) refused++;
      if (!c.ok) failures.push({ index: c.index, name: c.name, why: c.why });
    }
  }
  return { ran, refused, failures };
}

module.exports = { runFuzz };

if (require.main === module) {
  const args = process.argv.slice(2);
  const value = (flag, fallback) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const seed = value('--seed', 1);
  const cases = value('--cases', 20000);
  const started = Date.now();
  const { ran, refused, failures } = runFuzz({ seed, cases });
  for (const f of failures) console.log(`case ${f.index} (${f.name}): ${f.why}`);
  console.log(
    `fuzz: seed ${seed}, ${ran} cases (${refused} refused in the error format), ${failures.length} failed, ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  process.exit(failures.length ? 1 : 0);
}
