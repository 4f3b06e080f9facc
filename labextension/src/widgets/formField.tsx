/** The form's building blocks: a labelled field with its hint and error, and what a section gets. */

import * as React from 'react';

import { FieldErrors, FormField, IFormValues } from '../form';

/** What every section of the form gets: the values, a way to change them, the errors. */
export interface ISectionProps {
  values: IFormValues;
  update(change: Partial<IFormValues>): void;
  errors: FieldErrors;
  /** Unique per form: element ids are `${idPrefix}-${field}`. */
  idPrefix: string;
}

/** A field's label, its input (from `children`), a hint, and its error under it. */
export function Field(props: {
  name: FormField;
  label: string;
  errors: FieldErrors;
  hint?: string;
  required?: boolean;
  children: (ids: {
    id: string;
    'aria-invalid': boolean;
    'aria-describedby': string | undefined;
    'aria-required': boolean | undefined;
  }) => React.ReactNode;
  idPrefix: string;
}): JSX.Element {
  const id = `${props.idPrefix}-${props.name}`;
  const error = props.errors[props.name] ?? '';
  const described = [props.hint ? `${id}-hint` : '', error ? `${id}-error` : '']
    .filter(Boolean)
    .join(' ');
  return (
    <div className={`jp-PrimeHub-field ${error ? 'jp-mod-invalid' : ''}`}>
      <label htmlFor={id}>
        {props.label}
        {props.required ? <span aria-hidden="true"> *</span> : null}
      </label>
      {props.children({
        id,
        'aria-invalid': Boolean(error),
        'aria-describedby': described || undefined,
        'aria-required': props.required || undefined
      })}
      {props.hint ? (
        <div className="jp-PrimeHub-hint" id={`${id}-hint`}>
          {props.hint}
        </div>
      ) : null}
      {error ? (
        <div className="jp-PrimeHub-field-error" id={`${id}-error`}>
          {error}
        </div>
      ) : null}
    </div>
  );
}
