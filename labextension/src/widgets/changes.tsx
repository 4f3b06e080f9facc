/** Tables of spec fields in PrimeHub's words: changes (Update, Roll back, Compare) and a spec (View). */

import * as React from 'react';

import { flattenSpec, IFieldChange } from '../diff';
import { displayValue, fieldLabel } from '../labels';

/** Field by field, what changes between `before` and `after`; each changed cell marked. */
export function ChangeTable(props: {
  changes: IFieldChange[];
  beforeLabel: string;
  afterLabel: string;
  caption?: string;
  ariaLabel?: string;
}): JSX.Element {
  return (
    <table
      className="jp-PrimeHub-diff"
      aria-label={props.ariaLabel ?? props.caption}
    >
      {props.caption ? <caption>{props.caption}</caption> : null}
      <thead>
        <tr>
          <th scope="col">Field</th>
          <th scope="col">{props.beforeLabel}</th>
          <th scope="col">{props.afterLabel}</th>
        </tr>
      </thead>
      <tbody>
        {props.changes.map(change => (
          <tr
            key={change.field}
            className={`jp-PrimeHub-diff-${change.kind}`}
            data-field={change.field}
          >
            <th scope="row">{fieldLabel(change.field)}</th>
            <td className="jp-PrimeHub-diff-before">
              {displayValue(change.field, change.before)}
            </td>
            <td className="jp-PrimeHub-diff-after">
              {displayValue(change.field, change.after)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Every field of a spec with its value. */
export function SpecTable(props: {
  spec: unknown;
  caption: string;
}): JSX.Element {
  const fields = [...flattenSpec(props.spec).entries()];
  return (
    <table className="jp-PrimeHub-diff" aria-label={props.caption}>
      <caption>{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col">Field</th>
          <th scope="col">Value</th>
        </tr>
      </thead>
      <tbody>
        {fields.map(([field, value]) => (
          <tr key={field} data-field={field}>
            <th scope="row">{fieldLabel(field)}</th>
            <td>{displayValue(field, value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
