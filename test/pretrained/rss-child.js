// Loads one layer of a checkpoint in a fresh process and prints what it cost: bytes read, and RSS before the load
// and at its peak (test/pretrained.test.ts, the memory test).
//   node test/pretrained/rss-child.js DIR LAYER DTYPE
'use strict';
const path = require('path');
const { MoELayer } = require(path.resolve(__dirname, '..', '..'));

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
  const peak = process.resourceUsage().maxRSS * 1024;
  console.log(JSON.stringify({ before, peak, bytesRead, totalBytes, packed: l.packedBytes }));
  l.dispose();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
