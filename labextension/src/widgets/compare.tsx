/** The Compare tab (several predictors): the table with each challenger's test, and Promote. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { IComparison, IDeployment, PrimeHubAPI } from '../api';
import { compareRows, promotable, promoteQuestion } from '../compare';
import { ErrorMessage, messageOf } from './common';

const COLUMNS = [
  'Predictor',
  'Role',
  'Traffic',
  'Requests',
  'Error rate',
  'p50 ms',
  'p99 ms',
  'Feedback',
  'Mean reward',
  'Success',
  'Against the primary'
];

export function CompareTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
  onChanged(deployment: IDeployment): void;
}): JSX.Element {
  const { api, deployment } = props;
  const id = deployment.id;
  const [report, setReport] = React.useState<IComparison | null>(null);
  const [error, setError] = React.useState('');
  const [busy, setBusy] = React.useState(false);

  const load = React.useCallback(async () => {
    try {
      setReport(await api.compare(id));
      setError('');
    } catch (e) {
      setError(messageOf(e));
    }
  }, [api, id]);

  // Reload when the spec changes (a promote, a rollback, an update elsewhere).
  const revision = deployment.status.history?.[0]?.revision;
  React.useEffect(() => {
    void load();
  }, [load, revision]);

  const promote = async (name: string) => {
    if (!report) {
      return;
    }
    const result = await showDialog({
      title: `Promote ${name}?`,
      body: promoteQuestion(report, name),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Promote' })]
    });
    if (!result.button.accept) {
      return;
    }
    setBusy(true);
    try {
      props.onChanged(await api.promote(id, name));
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  if (!report) {
    return (
      <div className="jp-PrimeHub-compare">
        {error ? (
          <ErrorMessage message={error} />
        ) : (
          <p className="jp-PrimeHub-muted" role="status">
            Loading the comparison…
          </p>
        )}
      </div>
    );
  }
  const rows = compareRows(report);
  const canPromote = new Set(promotable(report));
  const tests = report.predictors.filter(p => p.test);
  return (
    <div className="jp-PrimeHub-compare">
      <ErrorMessage message={error} />
      {!report.counted ? (
        <p className="jp-PrimeHub-muted">
          No counts yet: send requests (and feedback) to the deployment.
        </p>
      ) : null}
      <table className="jp-PrimeHub-table" aria-label="Predictors compared">
        <thead>
          <tr>
            {COLUMNS.map(c => (
              <th scope="col" key={c}>
                {c}
              </th>
            ))}
            <th scope="col">
              <span className="jp-PrimeHub-sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map(row => (
            <tr
              key={row.name}
              data-predictor={row.name}
              className={row.significant ? 'jp-mod-selected' : ''}
            >
              <th scope="row">{row.name}</th>
              <td>{row.role}</td>
              <td>{row.traffic}</td>
              <td>{row.requests}</td>
              <td>{row.errorRate}</td>
              <td>{row.p50}</td>
              <td>{row.p99}</td>
              <td>{row.feedback}</td>
              <td>{row.meanReward}</td>
              <td>{row.success}</td>
              <td>{row.verdict}</td>
              <td>
                {canPromote.has(row.name) && rows.length > 1 ? (
                  <button
                    type="button"
                    className="jp-PrimeHub-button"
                    aria-label={`Promote ${row.name}`}
                    title="Send every request here and remove the other predictors"
                    disabled={busy}
                    onClick={() => void promote(row.name)}
                  >
                    Promote
                  </button>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {tests.length ? (
        <ul className="jp-PrimeHub-compare-tests">
          {tests.map(p => (
            <li key={p.name}>
              <b>{p.name}</b>: {p.test?.summary}
            </li>
          ))}
        </ul>
      ) : null}
      <p className="jp-PrimeHub-muted">{report.test}</p>
      <button
        type="button"
        className="jp-PrimeHub-button"
        onClick={() => void load()}
      >
        Reload
      </button>
    </div>
  );
}
