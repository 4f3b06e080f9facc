/** The "Service catalog" page: each deployment's OpenAPI document, rendered by Swagger UI. */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ICatalogDocument, IDeployment, PrimeHubAPI } from './api';

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
  const [deployments, setDeployments] = React.useState<IDeployment[] | null>(
    null
  );
  const [selected, setSelected] = React.useState(widget.selected);
  const [document, setDocument] = React.useState<ICatalogDocument | null>(null);
  const [error, setError] = React.useState('');
  React.useEffect(() => {
    widget.onSelect = setSelected;
    return () => {
      widget.onSelect = null;
    };
  }, [widget]);
  const load = React.useCallback(() => {
    widget.api
      .list()
      .then(found => {
        setDeployments(found);
        setSelected(current => current ?? found[0]?.id ?? null);
      })
      .catch(e => setError(e instanceof Error ? e.message : String(e)));
  }, [widget]);
  React.useEffect(load, [load]);
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
  }, [selected, widget]);
  const chosen = deployments?.find(d => d.id === selected);
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
                  onClick={() => setSelected(d.id)}
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
        {error ? <p className="jp-PrimeHub-error">{error}</p> : null}
        {document ? <SwaggerView document={document} /> : null}
      </section>
    </div>
  );
}

/** The catalog page in the main area; `select(id)` shows one deployment's document. */
export class CatalogWidget extends ReactWidget {
  /** Set while the view is mounted: switches the shown deployment. */
  onSelect: ((id: string) => void) | null = null;

  constructor(
    readonly api: PrimeHubAPI,
    public selected: string | null = null
  ) {
    super();
    this.id = CATALOG_ID;
    this.title.label = 'Service catalog';
    this.title.caption = 'OpenAPI documents of your deployments (Swagger UI)';
    this.title.closable = true;
    this.addClass('jp-PrimeHub-catalog');
  }

  /** Show this deployment's document. */
  select(id: string): void {
    this.selected = id;
    this.onSelect?.(id);
  }

  protected render(): JSX.Element {
    return <CatalogView widget={this} />;
  }
}
