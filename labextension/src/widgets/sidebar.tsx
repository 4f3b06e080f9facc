/** The left-sidebar panel: the deployments of the user's groups, searchable, at a glance. */

import { Clipboard } from '@jupyterlab/apputils';
import {
  addIcon,
  listIcon,
  refreshIcon,
  ReactWidget,
  searchIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { IDeployment } from '../api';
import {
  localTime,
  metadataText,
  phaseClass,
  scaleWords,
  splitEndpoint,
  timeAgo,
  utcTime
} from '../format';
import { deploymentsIcon } from '../icons';
import { DeploymentListModel } from '../model';
import { PIP_INSTALL, SERVER_EXTENSION_MISSING } from '../request';
import { CodeBlock, PhaseBadge, useSignal } from './common';

/** What the sidebar asks its host to do. */
export interface ISidebarActions {
  open(id: string): void;
  create(): void;
  /** Open the service catalog page (every visible deployment's OpenAPI document). */
  catalog(): void;
}

/** One deployment as a cell of the list. */
function DeploymentCell(props: {
  deployment: IDeployment;
  actions: ISidebarActions;
  now: number;
}): JSX.Element {
  const { deployment, actions } = props;
  const { spec, status } = deployment;
  const endpoint = status.endpoint ?? '';
  const parts = splitEndpoint(endpoint, deployment.id);
  const [copied, setCopied] = React.useState(false);
  React.useEffect(() => {
    if (!copied) {
      return;
    }
    const timer = window.setTimeout(() => setCopied(false), 1500);
    return () => window.clearTimeout(timer);
  }, [copied]);
  return (
    <li
      className={`jp-PrimeHub-cell ${phaseClass(status.phase)}`}
      data-deployment-id={deployment.id}
      title={`${spec.displayName} (${deployment.id})\n${metadataText(deployment)}`}
    >
      <div className="jp-PrimeHub-cell-head">
        <button
          type="button"
          className="jp-PrimeHub-cell-title"
          onClick={() => actions.open(deployment.id)}
          aria-label={`Open ${spec.displayName}, ${status.phase}`}
        >
          {spec.displayName}
        </button>
        <PhaseBadge phase={status.phase} />
      </div>
      {scaleWords(deployment).length ? (
        <div className="jp-PrimeHub-cell-scale jp-PrimeHub-muted">
          {scaleWords(deployment).join(', ')}
        </div>
      ) : null}
      <div className="jp-PrimeHub-cell-meta">
        <span
          className="jp-PrimeHub-cell-group"
          title={`Group ${spec.groupName}`}
        >
          {spec.groupName}
        </span>
        <span
          className="jp-PrimeHub-cell-updated"
          title={`Last updated ${localTime(status.lastUpdated)}\n${utcTime(status.lastUpdated)}`}
        >
          {timeAgo(status.lastUpdated, props.now)}
        </span>
      </div>
      {endpoint ? (
        <button
          type="button"
          className="jp-PrimeHub-cell-endpoint"
          title={`${endpoint}\nClick to copy`}
          aria-label={`Copy endpoint ${endpoint}`}
          onClick={() => {
            Clipboard.copyToSystem(endpoint);
            setCopied(true);
          }}
        >
          {copied ? (
            'Endpoint copied'
          ) : (
            <>
              <span className="jp-PrimeHub-endpoint-head">{parts.head}</span>
              <span className="jp-PrimeHub-endpoint-id">{parts.id}</span>
              <span className="jp-PrimeHub-endpoint-rest">
                <bdi>{parts.rest}</bdi>
              </span>
            </>
          )}
        </button>
      ) : (
        <div className="jp-PrimeHub-cell-endpoint jp-PrimeHub-muted">
          {status.phase === 'Failed' ? status.message : 'No endpoint yet'}
        </div>
      )}
    </li>
  );
}

/** The whole panel: header, filters, and the list (or why there is none). */
export function DeploymentList(props: {
  model: DeploymentListModel;
  actions: ISidebarActions;
}): JSX.Element {
  const { model, actions } = props;
  useSignal(model.changed);
  const [refreshing, setRefreshing] = React.useState(false);
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    // Keep "5 min ago" honest without a request.
    const timer = window.setInterval(() => setNow(Date.now()), 30000);
    return () => window.clearInterval(timer);
  }, []);
  const deployments = model.visible;

  const refresh = async () => {
    setRefreshing(true);
    try {
      await model.refresh();
    } finally {
      setRefreshing(false);
      setNow(Date.now());
    }
  };

  let body: JSX.Element;
  if (model.state === 'server-missing') {
    body = (
      <div className="jp-PrimeHub-empty" role="status">
        <p>
          {SERVER_EXTENSION_MISSING.slice(
            0,
            SERVER_EXTENSION_MISSING.indexOf(PIP_INSTALL)
          )}
        </p>
        <CodeBlock code={PIP_INSTALL} label="install command" />
        <p>Then restart the Jupyter server and reload this page.</p>
      </div>
    );
  } else if (model.state === 'loading') {
    body = (
      <div className="jp-PrimeHub-empty" role="status">
        Loading deployments…
      </div>
    );
  } else if (model.state === 'error' && model.all.length === 0) {
    body = (
      <div className="jp-PrimeHub-empty">
        <div className="jp-PrimeHub-error" role="alert">
          {model.error}
        </div>
        <button type="button" className="jp-PrimeHub-button" onClick={refresh}>
          Try again
        </button>
      </div>
    );
  } else if (deployments.length === 0) {
    body = (
      <div className="jp-PrimeHub-empty" role="status">
        {model.all.length === 0 ? (
          <>
            <p>No deployments yet.</p>
            <button
              type="button"
              className="jp-PrimeHub-button jp-mod-accept"
              onClick={() => actions.create()}
            >
              Create a deployment
            </button>
          </>
        ) : (
          <p>No deployment matches.</p>
        )}
      </div>
    );
  } else {
    body = (
      <ul className="jp-PrimeHub-list" aria-label="Deployments">
        {deployments.map(d => (
          <DeploymentCell
            key={d.id}
            deployment={d}
            actions={actions}
            now={now}
          />
        ))}
      </ul>
    );
  }

  return (
    <div className="jp-PrimeHub-sidebar">
      <header className="jp-PrimeHub-sidebar-header">
        <h2 className="jp-PrimeHub-sidebar-title">Model Deployments</h2>
        <div className="jp-PrimeHub-toolbar">
          <span
            className="jp-PrimeHub-live"
            data-live={model.live ? 'true' : 'false'}
            role="img"
            aria-label={model.live ? 'Live updates' : 'Polling for updates'}
            title={
              model.live
                ? 'Live: changes show as they happen'
                : 'Checking for changes every few seconds'
            }
          />
          <button
            type="button"
            className="jp-PrimeHub-icon-button"
            title="Create a deployment"
            aria-label="Create a deployment"
            onClick={() => actions.create()}
            disabled={model.state === 'server-missing'}
          >
            <addIcon.react tag="span" />
          </button>
          <button
            type="button"
            className="jp-PrimeHub-icon-button"
            title="Service catalog: OpenAPI documents of the deployments"
            aria-label="Open the service catalog"
            onClick={() => actions.catalog()}
            disabled={model.state === 'server-missing'}
          >
            <listIcon.react tag="span" />
          </button>
          <button
            type="button"
            className="jp-PrimeHub-icon-button"
            title="Refresh the list"
            aria-label="Refresh the list"
            aria-busy={refreshing}
            onClick={refresh}
          >
            <refreshIcon.react tag="span" />
          </button>
        </div>
      </header>
      <div className="jp-PrimeHub-filters">
        <label className="jp-PrimeHub-search">
          <searchIcon.react tag="span" className="jp-PrimeHub-search-icon" />
          <input
            type="search"
            placeholder="Search by name"
            aria-label="Search deployments by name"
            value={model.search}
            onChange={event => {
              model.search = event.target.value;
            }}
          />
        </label>
        <label className="jp-PrimeHub-check">
          <input
            type="checkbox"
            checked={model.mineOnly}
            onChange={event => {
              model.mineOnly = event.target.checked;
            }}
          />
          Deployed by me
        </label>
      </div>
      {model.state === 'error' && model.all.length > 0 ? (
        <div className="jp-PrimeHub-error jp-PrimeHub-stale" role="alert">
          Could not refresh: {model.error}
        </div>
      ) : null}
      {body}
    </div>
  );
}

/** The sidebar widget: restorable, and polling only while it shows (see the model). */
export class DeploymentsSidebar extends ReactWidget {
  constructor(
    readonly model: DeploymentListModel,
    private readonly _actions: ISidebarActions
  ) {
    super();
    this.id = 'primehub-deployments';
    this.addClass('jp-PrimeHub-sidebar-widget');
    this.title.icon = deploymentsIcon;
    this.title.caption = 'Model Deployments';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Model Deployments');
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    // Coming back from standby: show the present, not the moment it was hidden.
    void this.model.refresh();
  }

  render(): JSX.Element {
    return <DeploymentList model={this.model} actions={this._actions} />;
  }
}
