/** The History tab: every change, each viewable and comparable with the current spec. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { IDeployment, IHistoryEntry, PrimeHubAPI } from '../api';
import { diffSpecs, rollbackSpec } from '../diff';
import { localTime, utcTime } from '../format';
import { APIError } from '../request';
import { ChangeTable, SpecTable } from './changes';
import { ErrorMessage, messageOf } from './common';

export function HistoryTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
  onChanged(deployment: IDeployment): void;
}): JSX.Element {
  const { api, deployment } = props;
  const history = deployment.status.history ?? [];
  const [selected, setSelected] = React.useState<{
    revision: number;
    mode: 'view' | 'compare';
  } | null>(null);
  const [error, setError] = React.useState('');
  const entry = history.find(h => h.revision === selected?.revision);
  const current = history[0]?.revision;

  const rollback = async (target: IHistoryEntry) => {
    const changes = diffSpecs(
      deployment.spec,
      rollbackSpec(deployment.spec, target.spec)
    );
    const result = await showDialog({
      title: `Roll back to revision ${target.revision}?`,
      body: (
        <div className="jp-PrimeHub-rollback-preview">
          <p>
            {`Applies the spec of revision ${target.revision} (${localTime(target.time)}) as a new ` +
              'update. Running or stopped stays as it is.'}
          </p>
          {changes.length === 0 ? (
            <p>
              Nothing changes: revision {target.revision} is the current spec.
            </p>
          ) : (
            <ChangeTable
              changes={changes}
              beforeLabel="Now"
              afterLabel="After the roll back"
              caption="These fields change:"
              ariaLabel={`Changes of the roll back to revision ${target.revision}`}
            />
          )}
        </div>
      ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Roll back' })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    setError('');
    try {
      props.onChanged(
        await api.rollback(
          deployment.id,
          target.revision,
          `rollback to revision ${target.revision}`
        )
      );
    } catch (e) {
      setError(
        e instanceof APIError && e.status === 404 && e.reason !== 'NotFound'
          ? 'Rollback is not available on this server yet.'
          : messageOf(e)
      );
    }
  };

  return (
    <div className="jp-PrimeHub-history">
      <ErrorMessage message={error} />
      <table className="jp-PrimeHub-table" aria-label="History">
        <thead>
          <tr>
            <th scope="col">Revision</th>
            <th scope="col">Time</th>
            <th scope="col">User</th>
            <th scope="col">Message</th>
            <th scope="col">
              <span className="jp-PrimeHub-sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {history.map(h => (
            <tr
              key={h.revision}
              className={
                h.revision === selected?.revision ? 'jp-mod-selected' : ''
              }
              data-revision={h.revision}
            >
              <td>
                {h.revision}
                {h.revision === current ? ' (current)' : ''}
              </td>
              <td title={utcTime(h.time)}>{localTime(h.time)}</td>
              <td>{h.user}</td>
              <td className="jp-PrimeHub-history-message">{h.updateMessage}</td>
              <td>
                <div className="jp-PrimeHub-actions">
                  <button
                    type="button"
                    className="jp-PrimeHub-button"
                    aria-label={`View revision ${h.revision}`}
                    onClick={() =>
                      setSelected({ revision: h.revision, mode: 'view' })
                    }
                  >
                    View
                  </button>
                  <button
                    type="button"
                    className="jp-PrimeHub-button"
                    aria-label={`Compare revision ${h.revision} with the current spec`}
                    onClick={() =>
                      setSelected({ revision: h.revision, mode: 'compare' })
                    }
                    disabled={h.revision === current}
                  >
                    Compare
                  </button>
                  <button
                    type="button"
                    className="jp-PrimeHub-button"
                    aria-label={`Roll back to revision ${h.revision}`}
                    onClick={() => void rollback(h)}
                    disabled={h.revision === current}
                  >
                    Roll back
                  </button>
                </div>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {entry && selected ? (
        <section
          className="jp-PrimeHub-history-entry"
          aria-label={`Revision ${entry.revision}`}
        >
          <h3>
            Revision {entry.revision}
            {selected.mode === 'compare'
              ? ' compared with the current spec'
              : ''}
          </h3>
          <p className="jp-PrimeHub-muted" title={utcTime(entry.time)}>
            {localTime(entry.time)} by {entry.user}
            {entry.updateMessage ? `: ${entry.updateMessage}` : ''}
          </p>
          {selected.mode === 'compare' &&
          diffSpecs(entry.spec, deployment.spec).length === 0 ? (
            <p className="jp-PrimeHub-muted">
              Differences between revision {entry.revision} and the current
              spec: no field differs.
            </p>
          ) : selected.mode === 'compare' ? (
            <ChangeTable
              changes={diffSpecs(entry.spec, deployment.spec)}
              beforeLabel={`Revision ${entry.revision}`}
              afterLabel="Current"
              caption={`Differences between revision ${entry.revision} and the current spec`}
            />
          ) : (
            <SpecTable
              spec={entry.spec}
              caption={`Spec of revision ${entry.revision}`}
            />
          )}
        </section>
      ) : null}
    </div>
  );
}
