/** The sections of the create/update form: identity, model, resources, about, access. */

import * as React from 'react';

import { IGroup } from '../api';
import { splitNames, toggleName } from '../policy';
import { ErrorMessage } from './common';
import { Field, ISectionProps } from './formField';

/** Name, ID and group: fixed once the deployment exists (`locked`). */
export function IdentitySection(
  props: ISectionProps & { locked: boolean; usable: IGroup[] }
): JSX.Element {
  const { values, update, errors, idPrefix, locked, usable } = props;
  const f = { errors, idPrefix };
  return (
    <>
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
    </>
  );
}

/** Where the model comes from: a bundle URI or a container image. */
export function ModelSection(props: ISectionProps): JSX.Element {
  const { values, update, errors, idPrefix } = props;
  const f = { errors, idPrefix };
  return (
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
  );
}

/** Instance type and replicas, side by side. */
export function ResourcesSection(
  props: ISectionProps & { instanceTypes: IGroup['instanceTypes'] }
): JSX.Element {
  const { values, update, errors, idPrefix, instanceTypes } = props;
  const f = { errors, idPrefix };
  return (
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
  );
}

/** About the model: a description, and metadata as key/value rows the user adds and removes. */
export function AboutSection(props: ISectionProps): JSX.Element {
  const { values, update, errors, idPrefix } = props;
  const f = { errors, idPrefix };
  return (
    <>
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
    </>
  );
}

/** Endpoint access, its policy when private, and the update message (its hint depends on the mode). */
export function AccessSection(
  props: ISectionProps & { mode: 'create' | 'update'; groups: IGroup[] }
): JSX.Element {
  const { values, update, errors, idPrefix, mode } = props;
  const f = { errors, idPrefix };
  return (
    <>
      <Field
        {...f}
        name="privateAccess"
        label="Endpoint access"
        hint="Private: callers need a client name and token (add clients after deploying), or a bearer token of a user the policy below allows."
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
      {values.privateAccess ? <PolicyFields {...props} /> : null}

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
    </>
  );
}

/**
 * Who may call the private endpoint with a bearer token: the user's groups to tick, any other
 * group typed, and users as a comma list. Both empty: members of the deployment's group.
 */
function PolicyFields(
  props: ISectionProps & { groups: IGroup[] }
): JSX.Element {
  const { values, update, errors, idPrefix, groups } = props;
  const f = { errors, idPrefix };
  const chosen = new Set(splitNames(values.policyGroups, 'groups'));
  return (
    <fieldset className="jp-PrimeHub-fieldset jp-PrimeHub-policy">
      <legend>Access policy (bearer tokens)</legend>
      {groups.length ? (
        <div
          className="jp-PrimeHub-row jp-PrimeHub-policy-groups"
          role="group"
          aria-label="Allowed groups of yours"
        >
          {groups.map(group => (
            <label className="jp-PrimeHub-check" key={group.name}>
              <input
                type="checkbox"
                checked={chosen.has(group.name)}
                onChange={e =>
                  update({
                    policyGroups: toggleName(
                      values.policyGroups,
                      group.name,
                      e.target.checked
                    )
                  })
                }
              />
              {group.displayName || group.name}
            </label>
          ))}
        </div>
      ) : null}
      <Field
        {...f}
        name="policyGroups"
        label="Allowed groups"
        hint={`Comma-separated group names. Leave both empty to allow the members of ${values.groupName || "the deployment's group"}.`}
      >
        {ids => (
          <input
            {...ids}
            type="text"
            value={values.policyGroups}
            placeholder="data-science, analysts"
            onChange={e => update({ policyGroups: e.target.value })}
          />
        )}
      </Field>
      <Field
        {...f}
        name="policyUsers"
        label="Allowed users"
        hint="Comma-separated user names (as the identity provider names them)."
      >
        {ids => (
          <input
            {...ids}
            type="text"
            value={values.policyUsers}
            placeholder="alice, bob@example.com"
            onChange={e => update({ policyUsers: e.target.value })}
          />
        )}
      </Field>
    </fieldset>
  );
}
