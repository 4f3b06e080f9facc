// Unit tests of the request, model and helper layers (`jlpm test`); no browser, no server.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
    restoreMocks: true
  }
});
