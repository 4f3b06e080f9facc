/** The Information tab: what runs, where to call it, and a way to try it. */

import * as React from 'react';

import { IDeployment, PrimeHubAPI } from '../api';
import {
  NO_SAMPLE,
  localTime,
  modelSource,
  runExample,
  predictorReplicas,
  utcTime
} from '../format';
import { policySummary } from '../policy';
import {
  CodeBlock,
  CopyButton,
  ErrorMessage,
  messageOf,
  PhaseBadge
} from './common';

function Row(props: { label: string; children: React.ReactNode }): JSX.Element {
  return (
    <tr>
      <th scope="row">{props.label}</th>
      <td>{props.children}</td>
    </tr>
  );
}

function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Send a request to the model as the signed-in user (private endpoints too). */
function TryIt(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
}): JSX.Element {
  const [payload, setPayload] = React.useState(
    runExample(props.deployment).payload ?? ''
  );
  const [answer, setAnswer] = React.useState<{
    status: number;
    body: string;
  } | null>(null);
  const [error, setError] = React.useState('');
  const [busy, setBusy] = React.useState(false);
  const id = `jp-PrimeHub-try-${props.deployment.id}`;
  const send = async () => {
    setBusy(true);
    setError('');
    try {
      const result = await props.api.invoke(props.deployment.id, payload);
      setAnswer({ status: result.status, body: pretty(result.body) });
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="jp-PrimeHub-try">
      <label htmlFor={id}>
        Request body (sent as you, through the REST API)
      </label>
      <textarea
        id={id}
        rows={3}
        spellCheck={false}
        value={payload}
        placeholder={payload ? undefined : NO_SAMPLE}
        onChange={e => setPayload(e.target.value)}
      />
      <div className="jp-PrimeHub-row">
        <button
          type="button"
          className="jp-PrimeHub-button jp-mod-accept"
          onClick={send}
          disabled={
            busy || !payload || props.deployment.status.phase !== 'Deployed'
          }
          aria-busy={busy}
        >
          Send
        </button>
        {props.deployment.status.phase !== 'Deployed' ? (
          <span className="jp-PrimeHub-muted">
            The deployment must be Deployed.
          </span>
        ) : null}
      </div>
      <ErrorMessage message={error} />
      {answer ? (
        <div className="jp-PrimeHub-answer" aria-live="polite">
          <div>
            Status <strong>{answer.status}</strong>
          </div>
          <pre tabIndex={0}>{answer.body}</pre>
        </div>
      ) : null}
    </div>
  );
}

export function InformationTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
}): JSX.Element {
  const { deployment } = props;
  const { spec, status } = deployment;
  const predictor = spec.predictors[0];
  const access = spec.endpoint?.accessType ?? 'public';
  const endpoint = status.endpoint ?? '';
  const metadata = Object.entries(predictor.metadata ?? {});
  const policy = policySummary(deployment);
  const example = runExample(deployment);
  return (
    <div className="jp-PrimeHub-info">
      <table className="jp-PrimeHub-props">
        <tbody>
          <Row label="Status">
            <PhaseBadge phase={status.phase} />
            {status.message ? (
              <div
                className={
                  status.phase === 'Failed'
                    ? 'jp-PrimeHub-error'
                    : 'jp-PrimeHub-muted'
                }
              >
                {status.message}
              </div>
            ) : null}
          </Row>
          <Row label="Endpoint">
            {endpoint ? (
              <span className="jp-PrimeHub-row">
                <code className="jp-PrimeHub-endpoint">{endpoint}</code>
                <CopyButton text={endpoint} ariaLabel="Copy the endpoint URL" />
              </span>
            ) : (
              <span className="jp-PrimeHub-muted">not available yet</span>
            )}
          </Row>
          <Row label="Access">
            {access === 'private'
              ? 'Private (clients, bearer tokens)'
              : 'Public'}
          </Row>
          {policy ? <Row label="Access policy">{policy}</Row> : null}
          <Row label="Deployment ID">
            <code>{deployment.id}</code>
          </Row>
          <Row label="Group">{spec.groupName}</Row>
          <Row label={predictor.modelImage ? 'Model Image' : 'Model URI'}>
            <code className="jp-PrimeHub-break">{modelSource(deployment)}</code>
          </Row>
          {predictor.imagePullSecret ? (
            <Row label="Image Pull Secret">{predictor.imagePullSecret}</Row>
          ) : null}
          <Row label="Instance Type">{predictor.instanceType}</Row>
          {predictorReplicas(deployment).map(row => (
            <Row key={row.label} label={row.label}>
              {row.text}
            </Row>
          ))}
          <Row label="Deployed by">{spec.userName || '–'}</Row>
          <Row label="Created">
            <span title={utcTime(status.creationTime)}>
              {localTime(status.creationTime)}
            </span>
          </Row>
          <Row label="Last updated">
            <span title={utcTime(status.lastUpdated)}>
              {localTime(status.lastUpdated)}
            </span>
          </Row>
          <Row label="Description">
            {spec.description ? (
              <span className="jp-PrimeHub-pre-line">{spec.description}</span>
            ) : (
              <span className="jp-PrimeHub-muted">–</span>
            )}
          </Row>
          <Row label="Metadata">
            {metadata.length === 0 ? (
              <span className="jp-PrimeHub-muted">–</span>
            ) : (
              <dl className="jp-PrimeHub-metadata">
                {metadata.map(([key, value]) => (
                  <React.Fragment key={key}>
                    <dt>{key}</dt>
                    <dd>{value}</dd>
                  </React.Fragment>
                ))}
              </dl>
            )}
          </Row>
        </tbody>
      </table>

      {status.replicaStatuses && status.replicaStatuses.length > 0 ? (
        <section aria-label="Replicas">
          <h3>Replicas</h3>
          <table className="jp-PrimeHub-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Ready</th>
                <th scope="col">Phase</th>
                <th scope="col">Restarts</th>
                <th scope="col">Message</th>
              </tr>
            </thead>
            <tbody>
              {status.replicaStatuses.map(replica => (
                <tr key={replica.name}>
                  <td>
                    <code>{replica.name}</code>
                  </td>
                  <td>{replica.ready ? 'yes' : 'no'}</td>
                  <td>{replica.phase}</td>
                  <td>{replica.restarts}</td>
                  <td>{replica.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ) : null}

      <section aria-label="Run an Example">
        <h3>Run an Example</h3>
        {access === 'private' ? (
          <p className="jp-PrimeHub-muted">
            Private endpoint: replace &lt;client-name&gt; and
            &lt;client-token&gt; with a client from the Clients tab.
          </p>
        ) : null}
        <CodeBlock code={example.curl} label="example curl command" />
        {example.bearer ? (
          <>
            <p className="jp-PrimeHub-muted">
              Or with a bearer token (a JWT of your identity provider, of a user
              the access policy allows): replace &lt;access-token&gt;, e.g. with
              $TOKEN.
            </p>
            <CodeBlock
              code={example.bearer}
              label="example curl command with a bearer token"
            />
          </>
        ) : null}
        <TryIt api={props.api} deployment={deployment} />
      </section>
    </div>
  );
}
