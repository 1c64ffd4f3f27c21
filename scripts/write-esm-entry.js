// Writes dist/index.mjs, the ES module entry: it re-exports the CommonJS build's named exports, so that
// `import { MoELayer } from 'moe-kernels'` works as well as require(). Run after tsc.
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, '..', 'dist');
const cjs = require(path.join(dist, 'lib', 'index.js')); // loads no native code until used
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule');
const body = ["import cjs from './lib/index.js';", `export const { ${names.join(', ')} } = cjs;`, 'export default cjs;', ''].join('\n');
fs.writeFileSync(path.join(dist, 'index.mjs'), body);
fs.writeFileSync(path.join(dist, 'index.d.mts'), "export * from './lib/index.js';\nexport { default } from './lib/index.js';\n");
