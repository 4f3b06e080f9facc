/** The create and update form, in the main area, with the API's messages on its fields. */

import { Dialog, MainAreaWidget, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IDeployment, IGroup, PrimeHubAPI } from '../api';
import { diffSpecs, mergePatch } from '../diff';
import {
  emptyForm,
  enabledGroups,
  FieldErrors,
  fieldErrorsOf,
  FormField,
  formFromDeployment,
  generateId,
  IFormValues,
  instanceTypesOf,
  localProblems,
  randomSuffix,
  toCreateRequest,
  toUpdatePatch
} from '../form';
import { deploymentsIcon } from '../icons';
import { FEATURE_DISABLED_MESSAGE } from '../request';
import { ChangeTable } from './changes';
import { ErrorMessage, messageOf } from './common';

/** The order fields are checked in, for focusing the first one with a problem. */
const FIELD_ORDER: FormField[] = [
  'displayName',
  'id',
  'groupName',
  'model',
  'modelURI',
  'modelImage',
  'imagePullSecret',
  'instanceType',
  'replicas',
  'description',
  'metadata',
  'privateAccess',
  'updateMessage'
];

type Mode = 'create' | 'update';

interface IFormProps {
  api: PrimeHubAPI;
  mode: Mode;
  deployment?: IDeployment;
  onSaved(deployment: IDeployment): void;
  onCancel(): void;
}

/** A field's label, its input (from `children`), a hint, and its error under it. */
function Field(props: {
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

let formCount = 0;

/** The form itself. */
export function DeploymentForm(props: IFormProps): JSX.Element {
  const { api, mode, deployment } = props;
  const [idPrefix] = React.useState(() => `jp-PrimeHub-form-${++formCount}`);
  const [suffix] = React.useState(() => randomSuffix());
  const [groups, setGroups] = React.useState<IGroup[] | null>(null);
  const [loadError, setLoadError] = React.useState('');
  const [values, setValues] = React.useState<IFormValues>(() =>
    deployment ? formFromDeployment(deployment) : emptyForm([], suffix)
  );
  const [errors, setErrors] = React.useState<FieldErrors>({});
  const [busy, setBusy] = React.useState(false);
  const formRef = React.useRef<HTMLFormElement>(null);

  React.useEffect(() => {
    let live = true;
    api
      .groups()
      .then(found => {
        if (!live) {
          return;
        }
        setGroups(found);
        if (mode === 'create') {
          setValues(v => {
            if (v.groupName) {
              return v;
            }
            const fresh = emptyForm(found, suffix);
            return {
              ...v,
              groupName: fresh.groupName,
              instanceType: fresh.instanceType
            };
          });
        }
      })
      .catch(error => live && setLoadError(messageOf(error)));
    return () => {
      live = false;
    };
  }, [api, mode, suffix]);

  const update = (change: Partial<IFormValues>) => {
    setValues(v => {
      const next = { ...v, ...change };
      if (mode === 'create' && !next.customId) {
        next.id = generateId(next.displayName, suffix);
      }
      if (change.groupName !== undefined && groups) {
        const types = instanceTypesOf(groups, change.groupName);
        if (!types.some(t => t.name === next.instanceType)) {
          next.instanceType = types[0]?.name ?? '';
        }
      }
      return next;
    });
    // A field's old message goes away as soon as the user changes that field.
    const touched = Object.keys(change) as FormField[];
    setErrors(e => {
      const next = { ...e };
      for (const name of touched) {
        delete next[name];
      }
      if (touched.includes('modelURI') || touched.includes('modelImage')) {
        delete next.model;
      }
      return next;
    });
  };

  const focusFirst = (found: FieldErrors) => {
    let first = FIELD_ORDER.find(name => found[name]);
    if (first === 'model') {
      first = values.modelSource === 'image' ? 'modelImage' : 'modelURI';
    }
    const target = first
      ? formRef.current?.querySelector<HTMLElement>(`#${idPrefix}-${first}`)
      : formRef.current?.querySelector<HTMLElement>('.jp-PrimeHub-error');
    target?.focus();
  };

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const problems = localProblems(values, mode);
    if (Object.keys(problems).length > 0) {
      setErrors(problems);
      window.requestAnimationFrame(() => focusFirst(problems));
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      let saved: IDeployment;
      if (mode === 'create') {
        saved = await api.create(toCreateRequest(values));
      } else {
        const patch = toUpdatePatch(values, deployment!);
        if (!(await confirmUpdate(deployment!, patch))) {
          setBusy(false);
          return;
        }
        saved = await api.update(
          deployment!.id,
          patch,
          deployment!.resourceVersion
        );
      }
      setBusy(false);
      props.onSaved(saved);
    } catch (error) {
      const found = fieldErrorsOf(error, mode);
      setErrors(found);
      setBusy(false);
      window.requestAnimationFrame(() => focusFirst(found));
    }
  };

  const allGroups = groups ?? [];
  const usable = enabledGroups(allGroups);
  const instanceTypes = instanceTypesOf(allGroups, values.groupName);
  const locked = mode === 'update';
  const noGroup = mode === 'create' && groups !== null && usable.length === 0;
  const f = { errors, idPrefix };

  return (
    <form
      className="jp-PrimeHub-form"
      ref={formRef}
      onSubmit={submit}
      noValidate
      aria-label={
        mode === 'create' ? 'Create a deployment' : 'Update the deployment'
      }
    >
      <h2>
        {mode === 'create'
          ? 'Create a deployment'
          : `Update ${deployment!.spec.displayName}`}
      </h2>
      <ErrorMessage message={loadError} />
      {noGroup ? (
        <ErrorMessage
          message={
            allGroups.length > 0
              ? FEATURE_DISABLED_MESSAGE
              : 'You are not a member of any group. Ask your administrator to add you to one.'
          }
        />
      ) : null}
      <ErrorMessage message={errors[''] ?? ''} />
      {locked ? (
        <p className="jp-PrimeHub-locked-note" id={`${idPrefix}-locked`}>
          The deployment name, ID and group are fixed once a deployment is
          created (greyed out below); to change them, create a new deployment.
        </p>
      ) : null}

      <Field {...f} name="displayName" label="Deployment name" required>
        {ids => (
          <input
            {...ids}
            type="text"
            value={values.displayName}
            disabled={locked}
            autoFocus={!locked}
            onChange={e => update({ displayName: e.target.value })}
          />
        )}
      </Field>

      <Field
        {...f}
        name="id"
        label="Deployment ID"
        hint={
          locked
            ? 'The ID, the group and the name cannot change after create.'
            : 'Part of the endpoint URL: lowercase letters, digits and -.'
        }
      >
        {ids => (
          <div className="jp-PrimeHub-row">
            <input
              {...ids}
              type="text"
              value={values.id}
              disabled={locked || !values.customId}
              onChange={e => update({ id: e.target.value })}
            />
            {locked ? null : (
              <label className="jp-PrimeHub-check">
                <input
                  type="checkbox"
                  checked={values.customId}
                  onChange={e => update({ customId: e.target.checked })}
                />
                Custom ID
              </label>
            )}
          </div>
        )}
      </Field>

      <Field {...f} name="groupName" label="Group" required>
        {ids => (
          <select
            {...ids}
            value={values.groupName}
            disabled={locked || usable.length === 0}
            onChange={e => update({ groupName: e.target.value })}
          >
            {locked ? (
              <option value={values.groupName}>{values.groupName}</option>
            ) : (
              usable.map(group => (
                <option key={group.name} value={group.name}>
                  {group.displayName || group.name}
                </option>
              ))
            )}
          </select>
        )}
      </Field>

      <fieldset className="jp-PrimeHub-fieldset">
        <legend>Model</legend>
        <div
          className="jp-PrimeHub-row"
          role="radiogroup"
          aria-label="Model source"
        >
          <label className="jp-PrimeHub-check">
            <input
              type="radio"
              name={`${idPrefix}-source`}
              checked={values.modelSource === 'uri'}
              onChange={() => update({ modelSource: 'uri' })}
            />
            A model bundle (URI)
          </label>
          <label className="jp-PrimeHub-check">
            <input
              type="radio"
              name={`${idPrefix}-source`}
              checked={values.modelSource === 'image'}
              onChange={() => update({ modelSource: 'image' })}
            />
            A container image
          </label>
        </div>
        <ErrorMessage message={errors.model ?? ''} />
        {values.modelSource === 'uri' ? (
          <Field
            {...f}
            name="modelURI"
            label="Model URI"
            required
            hint="A model bundle: a path on the server (e.g. made by primehub_jupyter.package) or a URL."
          >
            {ids => (
              <input
                {...ids}
                type="text"
                value={values.modelURI}
                placeholder="/home/jovyan/iris-bundle"
                onChange={e => update({ modelURI: e.target.value })}
              />
            )}
          </Field>
        ) : (
          <Field {...f} name="modelImage" label="Model image" required>
            {ids => (
              <input
                {...ids}
                type="text"
                value={values.modelImage}
                placeholder="registry.example.com/team/iris:1.0"
                onChange={e => update({ modelImage: e.target.value })}
              />
            )}
          </Field>
        )}
        {values.modelSource === 'image' ? (
          <Field
            {...f}
            name="imagePullSecret"
            label="Image pull secret"
            hint="Only for images in a private registry."
          >
            {ids => (
              <input
                {...ids}
                type="text"
                value={values.imagePullSecret}
                onChange={e => update({ imagePullSecret: e.target.value })}
              />
            )}
          </Field>
        ) : null}
      </fieldset>

      <div className="jp-PrimeHub-row jp-PrimeHub-row-fields">
        <Field {...f} name="instanceType" label="Instance type" required>
          {ids => (
            <select
              {...ids}
              value={values.instanceType}
              disabled={instanceTypes.length === 0}
              onChange={e => update({ instanceType: e.target.value })}
            >
              {instanceTypes.length === 0 ? (
                <option value="">(none)</option>
              ) : null}
              {instanceTypes.map(it => (
                <option key={it.name} value={it.name}>
                  {`${it.displayName || it.name} (${it.cpu} CPU, ${it.memory}${
                    it.gpu ? `, ${it.gpu} GPU` : ''
                  })`}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field {...f} name="replicas" label="Replicas" required>
          {ids => (
            <input
              {...ids}
              type="number"
              min={1}
              max={64}
              step={1}
              value={values.replicas}
              onChange={e => update({ replicas: e.target.value })}
            />
          )}
        </Field>
      </div>

      <Field {...f} name="description" label="Description">
        {ids => (
          <textarea
            {...ids}
            rows={2}
            value={values.description}
            onChange={e => update({ description: e.target.value })}
          />
        )}
      </Field>

      <fieldset
        className="jp-PrimeHub-fieldset"
        aria-describedby={`${idPrefix}-metadata-error`}
      >
        <legend>Metadata</legend>
        {values.metadata.map((row, index) => (
          <div className="jp-PrimeHub-row jp-PrimeHub-metadata-row" key={index}>
            <input
              type="text"
              placeholder="key"
              aria-label={`Metadata key ${index + 1}`}
              id={index === 0 ? `${idPrefix}-metadata` : undefined}
              value={row.key}
              onChange={e => {
                const metadata = [...values.metadata];
                metadata[index] = { ...row, key: e.target.value };
                update({ metadata });
              }}
            />
            <input
              type="text"
              placeholder="value"
              aria-label={`Metadata value ${index + 1}`}
              value={row.value}
              onChange={e => {
                const metadata = [...values.metadata];
                metadata[index] = { ...row, value: e.target.value };
                update({ metadata });
              }}
            />
            <button
              type="button"
              className="jp-PrimeHub-button"
              aria-label={`Remove metadata row ${index + 1}`}
              onClick={() =>
                update({
                  metadata: values.metadata.filter((_, i) => i !== index)
                })
              }
            >
              Remove
            </button>
          </div>
        ))}
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={() =>
            update({ metadata: [...values.metadata, { key: '', value: '' }] })
          }
        >
          Add metadata
        </button>
        {errors.metadata ? (
          <div
            className="jp-PrimeHub-field-error"
            id={`${idPrefix}-metadata-error`}
          >
            {errors.metadata}
          </div>
        ) : null}
      </fieldset>

      <Field
        {...f}
        name="privateAccess"
        label="Endpoint access"
        hint="Private: callers need a client name and token (add clients after deploying)."
      >
        {ids => (
          <label className="jp-PrimeHub-check">
            <input
              {...ids}
              type="checkbox"
              checked={values.privateAccess}
              onChange={e => update({ privateAccess: e.target.checked })}
            />
            Private access
          </label>
        )}
      </Field>

      <Field
        {...f}
        name="updateMessage"
        label="Update Message"
        hint={
          mode === 'create'
            ? 'Optional: why you deploy it, shown as the first entry of the history.'
            : 'Why you change it: shown in the history.'
        }
      >
        {ids => (
          <input
            {...ids}
            type="text"
            value={values.updateMessage}
            onChange={e => update({ updateMessage: e.target.value })}
          />
        )}
      </Field>

      <div className="jp-PrimeHub-form-actions">
        <button
          type="submit"
          className="jp-PrimeHub-button jp-mod-accept"
          disabled={busy || noGroup}
          aria-busy={busy}
        >
          {mode === 'create' ? 'Deploy' : 'Update'}
        </button>
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={props.onCancel}
        >
          Cancel
        </button>
      </div>
    </form>
  );
}

/** Ask before an update, showing what will change field by field. */
async function confirmUpdate(
  current: IDeployment,
  patch: Record<string, unknown>
): Promise<boolean> {
  const preview = mergePatch(current.spec, patch);
  const changes = diffSpecs(current.spec, preview);
  const body =
    changes.length === 0 ? (
      <p>
        Nothing changes; the update only records its message in the history.
      </p>
    ) : (
      <div>
        <p>These fields change:</p>
        <ChangeTable
          changes={changes}
          beforeLabel="Now"
          afterLabel="After the update"
          ariaLabel="Changes of the update"
        />
      </div>
    );
  const result = await showDialog({
    title: `Update ${current.spec.displayName}?`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Update' })]
  });
  return result.button.accept;
}

/** The form in a main area tab. */
export class DeploymentFormWidget extends MainAreaWidget<ReactWidget> {
  constructor(props: IFormProps) {
    const content = ReactWidget.create(<DeploymentForm {...props} />);
    content.addClass('jp-PrimeHub-form-panel');
    super({ content });
    this.addClass('jp-PrimeHub-form-widget');
    this.title.icon = deploymentsIcon;
    this.title.closable = true;
    this.title.label =
      props.mode === 'create'
        ? 'New deployment'
        : `Update ${props.deployment!.spec.displayName}`;
    this.id = `primehub-form-${props.mode}-${props.deployment?.id ?? Date.now()}`;
  }
}
