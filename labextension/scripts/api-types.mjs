// Writes src/generated/api-types.ts from src/generated/api-schema.json (`jlpm generate:types`).
// The schema is written by `python -m primehub_jupyter.generate`; `make generate` runs both.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';
import prettier from 'prettier';

const here = new URL('../src/generated/', import.meta.url);
export const SCHEMA = fileURLToPath(new URL('api-schema.json', here));
export const TYPES = fileURLToPath(new URL('api-types.ts', here));

const BANNER =
  '/* Generated from api-schema.json by json-schema-to-typescript (`make generate`); do not edit. */';

/** The TypeScript text the schema file compiles to, formatted as `jlpm prettier` would. */
export async function apiTypes() {
  const schema = JSON.parse(await readFile(SCHEMA, 'utf8'));
  const text = await compile(schema, schema.title, {
    bannerComment: BANNER,
    additionalProperties: false,
    ignoreMinAndMaxItems: true,
    format: false
  });
  const style = await prettier.resolveConfig(TYPES);
  return prettier.format(text, { ...style, filepath: TYPES });
}

/** The TypeScript file as committed. */
export function committedApiTypes() {
  return readFile(TYPES, 'utf8');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await writeFile(TYPES, await apiTypes());
  console.log(`wrote ${TYPES}`);
}
