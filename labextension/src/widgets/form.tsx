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
import {
  AboutSection,
  AccessSection,
  IdentitySection,
  ModelSection,
  ResourcesSection
} from './formSections';

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
  'policyGroups',
  'policyUsers',
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
  const section = { values, update, errors, idPrefix };

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

      <IdentitySection {...section} locked={locked} usable={usable} />
      <ModelSection {...section} />
      <ResourcesSection {...section} instanceTypes={instanceTypes} />
      <AboutSection {...section} />
      <AccessSection {...section} mode={mode} groups={allGroups} />

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
