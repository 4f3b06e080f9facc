/** The Clients tab (private endpoints): add a client, see its token once, delete clients. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { IClient, IDeployment, PrimeHubAPI } from '../api';
import { runExample } from '../format';
import { CodeBlock, CopyButton, ErrorMessage, messageOf } from './common';

export function ClientsTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
  /** After a change: reload the deployment (its history grew). */
  onChanged(): void;
}): JSX.Element {
  const { api, deployment } = props;
  const id = deployment.id;
  const [clients, setClients] = React.useState<IClient[] | null>(null);
  const [name, setName] = React.useState('');
  const [error, setError] = React.useState('');
  const [nameError, setNameError] = React.useState('');
  const [busy, setBusy] = React.useState(false);
  const [created, setCreated] = React.useState<Required<IClient> | null>(null);
  const inputId = `jp-PrimeHub-client-name-${id}`;
  const tokenRef = React.useRef<HTMLDivElement>(null);

  const load = React.useCallback(async () => {
    try {
      setClients(await api.clients(id));
    } catch (e) {
      setError(messageOf(e));
    }
  }, [api, id]);

  React.useEffect(() => {
    void load();
  }, [load]);

  React.useEffect(() => {
    if (created) {
      tokenRef.current?.focus();
    }
  }, [created]);

  const add = async (event: React.FormEvent) => {
    event.preventDefault();
    const wanted = name.trim();
    if (!wanted) {
      setNameError('enter a client name');
      return;
    }
    if (clients?.some(c => c.name === wanted)) {
      const result = await showDialog({
        title: `Replace client ${wanted}?`,
        body: `A new token replaces the old one of "${wanted}", which stops working at once.`,
        buttons: [
          Dialog.cancelButton(),
          Dialog.warnButton({ label: 'Replace' })
        ]
      });
      if (!result.button.accept) {
        return;
      }
    }
    setBusy(true);
    setError('');
    setNameError('');
    try {
      const client = await api.addClient(id, wanted);
      setCreated(client);
      setName('');
      await load();
      props.onChanged();
    } catch (e) {
      setNameError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  const remove = async (client: IClient) => {
    const result = await showDialog({
      title: `Delete client ${client.name}?`,
      body: `Requests with the token of "${client.name}" are refused from now on.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!result.button.accept) {
      return;
    }
    setError('');
    try {
      await api.deleteClient(id, client.name);
      if (created?.name === client.name) {
        setCreated(null);
      }
      await load();
      props.onChanged();
    } catch (e) {
      setError(messageOf(e));
    }
  };

  return (
    <div className="jp-PrimeHub-clients">
      <p className="jp-PrimeHub-muted">
        Callers of this private endpoint use HTTP Basic with a client name and
        its token. Tokens are stored only as hashes: each is shown once, when
        the client is added.
      </p>
      <ErrorMessage message={error} />

      {created ? (
        <div
          className="jp-PrimeHub-token"
          role="status"
          tabIndex={-1}
          ref={tokenRef}
          aria-label={`Token of client ${created.name}`}
        >
          <strong>
            Token of {created.name}: copy it now, you will not see it again.
          </strong>
          <div className="jp-PrimeHub-row">
            <code className="jp-PrimeHub-token-value">{created.token}</code>
            <CopyButton
              text={created.token}
              ariaLabel={`Copy the token of ${created.name}`}
            />
          </div>
          <CodeBlock
            code={runExample(deployment, created).curl}
            label="curl command with this client"
          />
          <button
            type="button"
            className="jp-PrimeHub-button"
            onClick={() => setCreated(null)}
          >
            I have copied it, hide the token
          </button>
        </div>
      ) : null}

      <form
        className="jp-PrimeHub-row jp-PrimeHub-client-form"
        onSubmit={add}
        noValidate
      >
        <label htmlFor={inputId}>Client name</label>
        <input
          id={inputId}
          type="text"
          value={name}
          placeholder="billing-service"
          aria-invalid={Boolean(nameError)}
          aria-describedby={nameError ? `${inputId}-error` : undefined}
          onChange={e => {
            setName(e.target.value);
            setNameError('');
          }}
        />
        <button
          type="submit"
          className="jp-PrimeHub-button jp-mod-accept"
          disabled={busy}
          aria-busy={busy}
        >
          Add client
        </button>
      </form>
      {nameError ? (
        <div className="jp-PrimeHub-field-error" id={`${inputId}-error`}>
          {nameError}
        </div>
      ) : null}

      {clients === null ? (
        <p className="jp-PrimeHub-muted">Loading clients…</p>
      ) : clients.length === 0 ? (
        <p className="jp-PrimeHub-muted">
          No clients yet: nobody can call this endpoint.
        </p>
      ) : (
        <ul className="jp-PrimeHub-client-list" aria-label="Clients">
          {clients.map(client => (
            <li key={client.name}>
              <code>{client.name}</code>
              <button
                type="button"
                className="jp-PrimeHub-button jp-mod-warn"
                aria-label={`Delete client ${client.name}`}
                onClick={() => void remove(client)}
              >
                Delete
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
