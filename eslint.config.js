// `npm run lint`: eslint with typescript-eslint for the whole repository. A pragmatic set: the
// recommended rules of both, no import cycles (import-x), unused variables except `_`-prefixed.
// Formatting is prettier's job (`npm run format:check`), not eslint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import globals from 'globals';

const base = [
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createNodeResolver()],
      // Without these, import-x does not follow .ts files and finds no cycle through them.
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...globals.node } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Kubernetes objects, pg rows and test fixtures are untyped JSON by nature.
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    files: ['packages/backend/src/ops/dashboard/**/*.js'],
    languageOptions: { globals: { ...globals.browser } },
  },
];

export default [
  { ignores: ['**/node_modules/**', 'packages/sync/dist/**', 'test-artifacts/**', 'bench/results/**', '.elara/**'] },
  ...base,
];
