/** The "Service catalog" page: each deployment's OpenAPI document, rendered by Swagger UI. */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ICatalogDocument, PrimeHubAPI } from './api';
import { CatalogEntries } from './catalogEntries';
import { DeploymentListModel } from './model';

/** The main-area widget's id (one catalog page at a time). */
export const CATALOG_ID = 'primehub-catalog';

/** Swagger UI for one document; the bundle (large) is loaded the first time it is needed. */
function SwaggerView(props: { document: ICatalogDocument }): JSX.Element {
  const node = React.useRef<HTMLDivElement>(null);
  const [failed, setFailed] = React.useState('');
  React.useEffect(() => {
    let live = true;
    void import('swagger-ui-dist')
      .then(({ SwaggerUIBundle }) => {
        if (live && node.current) {
          node.current.replaceChildren();
          SwaggerUIBundle({
            domNode: node.current,
            spec: props.document as Record<string, unknown>,
            deepLinking: false,
            defaultModelsExpandDepth: -1
          });
        }
      })
      .catch(error => live && setFailed(String(error)));
    return () => {
      live = false;
    };
  }, [props.document]);
  return failed ? (
    <p className="jp-PrimeHub-error">Swagger UI did not load: {failed}</p>
  ) : (
    <div ref={node} className="jp-PrimeHub-catalog-swagger" />
  );
}

function CatalogView(props: { widget: CatalogWidget }): JSX.Element {
  const { widget } = props;
  const { entries } = widget;
  // The list follows the sidebar's model: new and deleted deployments show without a reload.
  const [, setVersion] = React.useState(0);
  React.useEffect(() => {
    const update = () => setVersion(v => v + 1);
    entries.changed.connect(update);
    return () => {
      entries.changed.disconnect(update);
    };
  }, [entries]);
  const deployments = entries.deployments;
  const selected = entries.selected;
  const chosen = deployments?.find(d => d.id === selected);
  // A deployment that reaches Deployed (or stops) answers differently: ask again then.
  const phase = chosen?.status.phase;
  const [document, setDocument] = React.useState<ICatalogDocument | null>(null);
  const [error, setError] = React.useState('');
  React.useEffect(() => {
    setDocument(null);
    setError('');
    if (!selected) {
      return;
    }
    let live = true;
    widget.api
      .catalog(selected)
      .then(found => live && setDocument(found))
      .catch(e => live && setError(e instanceof Error ? e.message : String(e)));
    return () => {
      live = false;
    };
  }, [selected, phase, widget]);
  const shownError = error || entries.error;
  const load = () => void entries.refresh().catch(() => undefined);
  return (
    <div className="jp-PrimeHub-catalog-page">
      <nav className="jp-PrimeHub-catalog-list" aria-label="Deployments">
        <h2>Service catalog</h2>
        <button type="button" className="jp-PrimeHub-button" onClick={load}>
          Refresh
        </button>
        {deployments === null ? (
          <p>Loading…</p>
        ) : deployments.length === 0 ? (
          <p>There are no deployments you can see yet.</p>
        ) : (
          <ul>
            {deployments.map(d => (
              <li key={d.id}>
                <button
                  type="button"
                  className="jp-PrimeHub-catalog-item"
                  data-deployment-id={d.id}
                  aria-current={d.id === selected ? 'true' : undefined}
                  onClick={() => entries.select(d.id)}
                >
                  {d.spec.displayName}
                  <span className="jp-PrimeHub-catalog-meta">
                    {d.id} · {d.status.phase} ·{' '}
                    {d.spec.endpoint?.accessType ?? 'public'}
                  </span>
                </button>
              </li>
            ))}
          </ul>
        )}
      </nav>
      <section className="jp-PrimeHub-catalog-document">
        {chosen?.spec.endpoint?.accessType === 'private' ? (
          <p className="jp-PrimeHub-catalog-hint">
            Private endpoint: press Authorize and enter a client&apos;s name and
            token (Clients tab of the deployment) to try it out.
          </p>
        ) : null}
        {shownError ? <p className="jp-PrimeHub-error">{shownError}</p> : null}
        {document ? <SwaggerView document={document} /> : null}
      </section>
    </div>
  );
}

/**
 * The catalog page in the main area; `select(id)` shows one deployment's document. Its list
 * is the sidebar's `DeploymentListModel`; the layout restorer reopens it with its selection.
 */
export class CatalogWidget extends ReactWidget {
  constructor(
    readonly api: PrimeHubAPI,
    list: DeploymentListModel,
    selected: string | null = null
  ) {
    super();
    this.entries = new CatalogEntries(list, selected);
    this.id = CATALOG_ID;
    this.title.label = 'Service catalog';
    this.title.caption = 'OpenAPI documents of your deployments (Swagger UI)';
    this.title.closable = true;
    this.addClass('jp-PrimeHub-catalog');
  }

  /** The deployments listed and the one shown (its `changed` also tells the restorer). */
  readonly entries: CatalogEntries;

  /** The id of the deployment whose document is shown. */
  get selected(): string | null {
    return this.entries.selected;
  }

  /** Show this deployment's document. */
  select(id: string): void {
    this.entries.select(id);
  }

  dispose(): void {
    this.entries.dispose();
    super.dispose();
  }

  protected render(): JSX.Element {
    return <CatalogView widget={this} />;
  }
}
