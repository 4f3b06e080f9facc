/** Field-level comparison of two deployment specs, for the History tab. */

import { IDeploymentSpec } from './api';

/** One leaf of a spec: `predictors.0.replicas` -> `2`. */
export type FlatSpec = Map<string, string>;

/** How a field differs between two specs. */
export interface IFieldChange {
  field: string;
  before: string | undefined;
  after: string | undefined;
  kind: 'added' | 'removed' | 'changed' | 'same';
}

/** Fields that say who and why, not what: left out of comparisons. */
export const IGNORED_FIELDS: ReadonlySet<string> = new Set([
  'updateMessage',
  'userName'
]);

function leaf(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * Flatten a spec into dotted paths and printable values.
 *
 * Objects and lists of objects are walked (`predictors.0.replicas`); a list of `{name, value}`
 * pairs (environment variables) becomes `env.NAME`; a list of plain values and a list of
 * `{name}` objects (the endpoint's clients) read better as one comma-separated value.
 */
export function flattenSpec(spec: unknown, prefix = ''): FlatSpec {
  const out: FlatSpec = new Map();
  const walk = (value: unknown, at: string): void => {
    if (Array.isArray(value)) {
      const named = value.every(
        item =>
          item !== null &&
          typeof item === 'object' &&
          Object.keys(item).length === 1 &&
          'name' in item
      );
      const pairs = value.every(
        item =>
          item !== null &&
          typeof item === 'object' &&
          Object.keys(item).length === 2 &&
          'name' in item &&
          'value' in item
      );
      if (value.length === 0) {
        out.set(at, '');
      } else if (pairs) {
        // Environment variables read as `env.NAME` -> value, like PrimeHub's form.
        for (const item of value) {
          out.set(`${at}.${leaf(item.name)}`, leaf(item.value));
        }
      } else if (named) {
        out.set(at, value.map(item => leaf(item.name)).join(', '));
      } else if (
        value.every(item => item === null || typeof item !== 'object')
      ) {
        out.set(at, value.map(leaf).join(', '));
      } else {
        value.forEach((item, index) => walk(item, `${at}.${index}`));
      }
      return;
    }
    if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>);
      if (entries.length === 0 && at) {
        out.set(at, '');
      }
      for (const [key, item] of entries) {
        const path = at ? `${at}.${key}` : key;
        if (!at && IGNORED_FIELDS.has(key)) {
          continue;
        }
        walk(item, path);
      }
      return;
    }
    out.set(at, leaf(value));
  };
  walk(spec, prefix);
  return out;
}

/**
 * Compare two specs field by field.
 *
 * @param before - the older spec (e.g. a history entry).
 * @param after - the newer spec (e.g. the current one).
 * @param includeSame - also list the fields that did not change.
 * @returns the fields in the order they first appear, `after` first.
 */
export function diffSpecs(
  before: unknown,
  after: unknown,
  includeSame = false
): IFieldChange[] {
  const a = flattenSpec(before);
  const b = flattenSpec(after);
  const fields = [...new Set([...b.keys(), ...a.keys()])];
  const changes: IFieldChange[] = [];
  for (const field of fields) {
    const was = a.get(field);
    const now = b.get(field);
    // An empty value and a missing one mean the same to a person (no metadata, no secret).
    const blankWas = was === undefined || was === '';
    const blankNow = now === undefined || now === '';
    let kind: IFieldChange['kind'];
    if (was === now || (blankWas && blankNow)) {
      kind = 'same';
    } else if (blankWas) {
      kind = 'added';
    } else if (blankNow) {
      kind = 'removed';
    } else {
      kind = 'changed';
    }
    if (kind !== 'same' || includeSame) {
      changes.push({ field, before: was, after: now, kind });
    }
  }
  return changes;
}

/**
 * JSON merge patch (RFC 7386) as the API applies it: `null` removes, objects merge, lists are
 * replaced, except `predictors`, which merges item by item. Used to preview an update.
 */
export function mergePatch(
  target: unknown,
  patch: unknown,
  key?: string
): unknown {
  if (patch !== null && typeof patch === 'object' && !Array.isArray(patch)) {
    const result: Record<string, unknown> =
      target !== null && typeof target === 'object' && !Array.isArray(target)
        ? { ...(target as Record<string, unknown>) }
        : {};
    for (const [name, value] of Object.entries(
      patch as Record<string, unknown>
    )) {
      if (value === null) {
        delete result[name];
      } else {
        result[name] = mergePatch(result[name], value, name);
      }
    }
    return result;
  }
  if (
    key === 'predictors' &&
    Array.isArray(patch) &&
    Array.isArray(target) &&
    patch.length > 0 &&
    patch.length <= target.length &&
    patch.every(item => item !== null && typeof item === 'object') &&
    target.every(item => item !== null && typeof item === 'object')
  ) {
    return [
      ...patch.map((item, index) => mergePatch(target[index], item)),
      ...target.slice(patch.length)
    ];
  }
  return patch;
}

/**
 * The spec a roll back to `target` applies, as the server builds it: the target's spec with
 * the current `stop`, user and clients (a roll back neither starts nor stops, and client tokens
 * cannot come back). Used to preview a roll back.
 */
export function rollbackSpec(
  current: IDeploymentSpec,
  target: IDeploymentSpec
): IDeploymentSpec {
  return {
    ...target,
    stop: current.stop,
    userName: current.userName,
    endpoint: {
      ...(target.endpoint ?? { accessType: 'public' }),
      clients: current.endpoint?.clients ?? []
    }
  };
}
