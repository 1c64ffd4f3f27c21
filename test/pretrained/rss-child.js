// Loads one layer of a checkpoint in a fresh process and prints what it cost: bytes read, and RSS before the load
// and at its peak (test/pretrained.test.ts, the memory test).
//   node test/pretrained/rss-child.js DIR LAYER DTYPE
'use strict';
const path = require('path');
const { MoELayer } = require(path.resolve(__dirname, '..', '..'));

// This process's peak RSS. Not getrusage's maxRSS: Linux carries it across execve from the forked parent, so it said
// what the Jest worker that spawned this process held (170 MB after a test that had used 256 MiB, against 108 here).
// VmHWM belongs to the memory of this program alone.
function peakRss() {
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

(async () => {
  const [dir, layer, dtype] = process.argv.slice(2);
  // Load the addon and touch the allocator first, so the baseline holds what any use of the library holds.
  const warm = await import('node:process');
  void warm;
  const before = process.memoryUsage().rss;
  let bytesRead = 0;
  let totalBytes = 0;
  const l = await MoELayer.fromPretrained(dir, {
    layer: Number(layer),
    weightDtype: dtype,
    onProgress: (p) => {
      bytesRead = p.bytesRead;
      totalBytes = p.totalBytes;
    },
  });
  const peak = peakRss();
  console.log(JSON.stringify({ before, peak, bytesRead, totalBytes, packed: l.packedBytes }));
  l.dispose();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
