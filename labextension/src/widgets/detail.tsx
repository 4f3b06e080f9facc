/** The detail view of one deployment in the main area: a header with actions, and tabs. */

import { MainAreaWidget } from '@jupyterlab/apputils';
import { ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { deleteDeployment, startDeployment, stopDeployment } from '../actions';
import { IDeployment, PrimeHubAPI } from '../api';
import { deploymentsIcon } from '../icons';
import { DeploymentListModel, DeploymentModel } from '../model';
import { canCompare } from '../compare';
import { ClientsTab } from './clients';
import { CompareTab } from './compare';
import { ErrorMessage, PhaseBadge, useSignal } from './common';
import { HistoryTab } from './history';
import { InformationTab } from './info';
import { IFileOpener, JobsTab } from './jobs';
import { LogsTab } from './logs';
import { MetricsTab } from './metrics';

export type TabId =
  | 'information'
  | 'logs'
  | 'history'
  | 'clients'
  | 'metrics'
  | 'jobs'
  | 'compare';

const TAB_LABELS: Record<TabId, string> = {
  information: 'Information',
  logs: 'Logs',
  history: 'History',
  clients: 'Clients',
  metrics: 'Metrics',
  jobs: 'Jobs',
  compare: 'Compare'
};

/** What the detail view asks its host to do. */
export interface IDetailActions {
  /** Open the update form of this deployment. */
  update(deployment: IDeployment): void;
  /** The deployment was deleted: close the view. */
  deleted(id: string): void;
  /** Open the service catalog at this deployment's OpenAPI document. */
  catalog(id: string): void;
  /** Open a job's output in JupyterLab; without it, the Jobs tab shows the paths. */
  files?: IFileOpener;
}

/**
 * The tabs of a deployment: Clients only for a private endpoint, Jobs always, Compare with
 * several predictors.
 */
export function tabsOf(deployment: IDeployment | null): TabId[] {
  const tabs: TabId[] = ['information', 'logs', 'history'];
  if (deployment?.spec.endpoint?.accessType === 'private') {
    tabs.push('clients');
  }
  tabs.push('metrics', 'jobs');
  if (canCompare(deployment)) {
    tabs.push('compare');
  }
  return tabs;
}

function DetailView(props: {
  panel: DeploymentDetailPanel;
  actions: IDetailActions;
}): JSX.Element {
  const { panel, actions } = props;
  const model = panel.model;
  useSignal(model.changed);
  useSignal(panel.tabChanged);
  const deployment = model.deployment;
  const tabs = tabsOf(deployment);
  const tab = tabs.includes(panel.tab) ? panel.tab : 'information';
  const [busy, setBusy] = React.useState(false);
  const tabRefs = React.useRef<
    Partial<Record<TabId, HTMLButtonElement | null>>
  >({});
  const base = `jp-PrimeHub-detail-${model.id}`;

  if (!deployment) {
    return (
      <div className="jp-PrimeHub-detail">
        {model.error ? (
          <ErrorMessage message={model.error} />
        ) : (
          <p className="jp-PrimeHub-muted" role="status">
            Loading {model.id}…
          </p>
        )}
      </div>
    );
  }

  const act = async (run: () => Promise<void>) => {
    setBusy(true);
    try {
      await run();
    } finally {
      setBusy(false);
    }
  };
  const { spec, status } = deployment;
  const stopped = Boolean(spec.stop);

  const onTabKey = (event: React.KeyboardEvent, index: number) => {
    let next = -1;
    if (event.key === 'ArrowRight') {
      next = (index + 1) % tabs.length;
    } else if (event.key === 'ArrowLeft') {
      next = (index - 1 + tabs.length) % tabs.length;
    } else if (event.key === 'Home') {
      next = 0;
    } else if (event.key === 'End') {
      next = tabs.length - 1;
    }
    if (next >= 0) {
      event.preventDefault();
      panel.tab = tabs[next];
      tabRefs.current[tabs[next]]?.focus();
    }
  };

  let content: JSX.Element;
  switch (tab) {
    case 'logs':
      content = <LogsTab api={model.api} deployment={deployment} />;
      break;
    case 'history':
      content = (
        <HistoryTab
          api={model.api}
          deployment={deployment}
          onChanged={d => model.set(d)}
        />
      );
      break;
    case 'clients':
      content = (
        <ClientsTab
          api={model.api}
          deployment={deployment}
          onChanged={() => void model.refresh()}
        />
      );
      break;
    case 'metrics':
      content = <MetricsTab api={model.api} deployment={deployment} />;
      break;
    case 'jobs':
      content = (
        <JobsTab
          api={model.api}
          deployment={deployment}
          isVisible={() => model.isVisible()}
          files={actions.files}
        />
      );
      break;
    case 'compare':
      content = (
        <CompareTab
          api={model.api}
          deployment={deployment}
          onChanged={d => model.set(d)}
        />
      );
      break;
    default:
      content = <InformationTab api={model.api} deployment={deployment} />;
  }

  return (
    <div className="jp-PrimeHub-detail">
      <header className="jp-PrimeHub-detail-header">
        <div className="jp-PrimeHub-detail-title">
          <h2>{spec.displayName}</h2>
          <PhaseBadge phase={status.phase} />
          <span className="jp-PrimeHub-muted">
            {deployment.id} · {spec.groupName}
          </span>
        </div>
        <div
          className="jp-PrimeHub-toolbar"
          role="toolbar"
          aria-label="Deployment actions"
        >
          <button
            type="button"
            className="jp-PrimeHub-button"
            disabled={busy || model.gone}
            onClick={() => actions.update(deployment)}
          >
            Update
          </button>
          <button
            type="button"
            className="jp-PrimeHub-button"
            title="Its OpenAPI document in Swagger UI, with try-it-out"
            disabled={model.gone}
            onClick={() => actions.catalog(deployment.id)}
          >
            Service catalog
          </button>
          {stopped ? (
            <button
              type="button"
              className="jp-PrimeHub-button"
              disabled={busy || model.gone}
              onClick={() =>
                act(async () => {
                  const started = await startDeployment(model.api, deployment);
                  if (started) {
                    model.set(started);
                  }
                })
              }
            >
              Start
            </button>
          ) : (
            <button
              type="button"
              className="jp-PrimeHub-button"
              disabled={busy || model.gone}
              onClick={() =>
                act(async () => {
                  const stoppedNow = await stopDeployment(
                    model.api,
                    deployment
                  );
                  if (stoppedNow) {
                    model.set(stoppedNow);
                  }
                })
              }
            >
              Stop
            </button>
          )}
          <button
            type="button"
            className="jp-PrimeHub-button jp-mod-warn"
            disabled={busy || model.gone}
            onClick={() =>
              act(async () => {
                if (await deleteDeployment(model.api, deployment)) {
                  model.markGone();
                  actions.deleted(deployment.id);
                }
              })
            }
          >
            Delete
          </button>
          <button
            type="button"
            className="jp-PrimeHub-icon-button"
            title="Refresh"
            aria-label="Refresh this deployment"
            onClick={() => void model.refresh()}
          >
            <refreshIcon.react tag="span" />
          </button>
        </div>
      </header>
      {model.gone ? (
        <ErrorMessage
          message={`${model.error || 'This deployment was deleted.'}`}
        />
      ) : null}
      {!model.gone && model.error ? (
        <ErrorMessage message={`Could not refresh: ${model.error}`} />
      ) : null}
      {status.phase === 'Failed' && status.message ? (
        <div className="jp-PrimeHub-error" role="alert">
          {status.message}
        </div>
      ) : null}
      <div
        className="jp-PrimeHub-tabs"
        role="tablist"
        aria-label="Deployment details"
      >
        {tabs.map((id, index) => (
          <button
            key={id}
            type="button"
            role="tab"
            id={`${base}-tab-${id}`}
            aria-selected={tab === id}
            aria-controls={`${base}-panel`}
            tabIndex={tab === id ? 0 : -1}
            className={`jp-PrimeHub-tab ${tab === id ? 'jp-mod-current' : ''}`}
            ref={node => {
              tabRefs.current[id] = node;
            }}
            onClick={() => {
              panel.tab = id;
            }}
            onKeyDown={event => onTabKey(event, index)}
          >
            {TAB_LABELS[id]}
          </button>
        ))}
      </div>
      <div
        className="jp-PrimeHub-tab-panel"
        role="tabpanel"
        id={`${base}-panel`}
        aria-labelledby={`${base}-tab-${tab}`}
      >
        {content}
      </div>
    </div>
  );
}

/** The React content of a detail view; keeps the chosen tab across re-renders and re-attach. */
export class DeploymentDetailPanel extends ReactWidget {
  constructor(
    readonly model: DeploymentModel,
    private readonly _actions: IDetailActions
  ) {
    super();
    this.addClass('jp-PrimeHub-detail-panel');
  }

  get tab(): TabId {
    return this._tab;
  }

  set tab(value: TabId) {
    if (value !== this._tab) {
      this._tab = value;
      this._tabChanged.emit();
    }
  }

  get tabChanged(): ISignal<this, void> {
    return this._tabChanged;
  }

  render(): JSX.Element {
    return <DetailView panel={this} actions={this._actions} />;
  }

  private _tab: TabId = 'information';
  private _tabChanged = new Signal<this, void>(this);
}

/** A deployment in a main area tab. Polls only while it shows; stops everything on close. */
export class DeploymentDetailWidget extends MainAreaWidget<DeploymentDetailPanel> {
  constructor(options: {
    api: PrimeHubAPI;
    id: string;
    list?: DeploymentListModel;
    actions: IDetailActions;
  }) {
    // The poll asks the widget whether it shows; the widget exists only after super().
    const shown = { widget: null as Widget | null };
    const model = new DeploymentModel({
      api: options.api,
      id: options.id,
      list: options.list,
      isVisible: () => shown.widget?.isVisible ?? false
    });
    const content = new DeploymentDetailPanel(model, options.actions);
    super({ content });
    shown.widget = this;
    this.model = model;
    this.id = `primehub-deployment-${options.id}`;
    this.addClass('jp-PrimeHub-detail-widget');
    this.title.icon = deploymentsIcon;
    this.title.label = options.id;
    this.title.closable = true;
    model.changed.connect(this._syncTitle, this);
  }

  readonly model: DeploymentModel;

  /** Open on a tab (e.g. from a command). */
  showTab(tab: TabId): void {
    this.content.tab = tab;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.model.refresh();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.dispose();
    super.dispose();
  }

  private _syncTitle(): void {
    const d = this.model.deployment;
    if (d) {
      this.title.label = d.spec.displayName;
      this.title.caption = `${d.spec.displayName} (${d.id}): ${d.status.phase}`;
    }
  }
}
