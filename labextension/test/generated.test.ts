// The generated API types are what json-schema-to-typescript makes of the committed schema.
import { describe, expect, it } from 'vitest';

import { apiTypes, committedApiTypes } from '../scripts/api-types.mjs';

describe('src/generated/api-types.ts', () => {
  it('is up to date with api-schema.json (else run `make generate`)', async () => {
    const [fresh, committed] = await Promise.all([
      apiTypes(),
      committedApiTypes()
    ]);
    expect(
      committed === fresh,
      'src/generated/api-types.ts is out of date: run `make generate`'
    ).toBe(true);
  });
});
