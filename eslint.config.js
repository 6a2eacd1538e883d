// ESLint for the web UI's JavaScript (services/gateway/ui/static): browser ES modules, no build step.
import js from '@eslint/js';
import globals from 'globals';

export default [
  { ignores: ['node_modules/', '.venv/', 'tests/', 'benchmarks/', '.cache/'] },
  js.configs.recommended,
  {
    files: ['services/gateway/ui/static/**/*.js'],
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: globals.browser },
    rules: {
      'no-unused-vars': ['error', { args: 'after-used', caughtErrors: 'none' }],
      eqeqeq: ['error', 'always'],
      'no-var': 'error',
      'prefer-const': 'error',
    },
  },
];
