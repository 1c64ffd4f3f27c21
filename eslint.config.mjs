// typescript-eslint's recommended rules over the TypeScript and JavaScript of the repository (npm run lint).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/', 'build*/', 'node_modules/', 'prebuilds/', 'benchmarks/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      // Unused arguments named _x are deliberate (a callback's shape); everything else unused is an error.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // The package compiles to CommonJS and loads its addon, optional peers and Node built-ins with require()
      // where they may be missing or must load late: an import cannot say that.
      '@typescript-eslint/no-require-imports': 'off',
      // A let assigned once but read earlier by a closure (a test that fixes the noise after the first forward)
      // cannot become a const, nor can one name of a destructuring whose other names are reassigned.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true, destructuring: 'all' }],
    },
  },
  {
    files: ['test/**/*.ts'],
    languageOptions: { globals: { ...globals.jest } },
  },
);
