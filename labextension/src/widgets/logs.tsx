/** The Logs tab: the last 2000 lines per replica or all, follow, scroll to bottom, download. */

import * as React from 'react';

import { IDeployment, PrimeHubAPI } from '../api';
import { logFileName } from '../format';
import { LOG_TAIL, LogBuffer, LogFollower } from '../logs';
import { ErrorMessage, messageOf } from './common';

/** Save a blob under a file name, the way a download link does. */
function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function LogsTab(props: {
  api: PrimeHubAPI;
  deployment: IDeployment;
}): JSX.Element {
  const { api, deployment } = props;
  const id = deployment.id;
  const [replicas, setReplicas] = React.useState<string[]>([]);
  const [replica, setReplica] = React.useState('');
  const [follow, setFollow] = React.useState(false);
  const [lines, setLines] = React.useState<readonly string[]>([]);
  const [error, setError] = React.useState('');
  const [loading, setLoading] = React.useState(false);
  const [atBottom, setAtBottom] = React.useState(true);
  const [reload, setReload] = React.useState(0);
  const buffer = React.useRef(new LogBuffer(LOG_TAIL));
  const view = React.useRef<HTMLPreElement>(null);
  const stick = React.useRef(true);
  const selectId = `jp-PrimeHub-logs-replica-${id}`;

  // The replica names, again whenever the rollout changes them.
  const replicaKey = (deployment.status.replicaStatuses ?? [])
    .map(r => r.name)
    .join(',');
  React.useEffect(() => {
    let live = true;
    api
      .replicas(id)
      .then(names => {
        if (live) {
          setReplicas(names);
        }
      })
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [api, id, replicaKey]);

  // The lines: one tail, or a follow stream that also starts with the tail.
  React.useEffect(() => {
    let live = true;
    buffer.current.clear();
    setLines([]);
    setError('');
    stick.current = true;
    const target = replica || undefined;
    if (!follow) {
      setLoading(true);
      api
        .logs(id, { replica: target, tail: LOG_TAIL })
        .then(found => {
          if (live) {
            buffer.current.replace(found);
            setLines(buffer.current.lines);
          }
        })
        .catch(e => live && setError(messageOf(e)))
        .finally(() => live && setLoading(false));
      return () => {
        live = false;
      };
    }
    const follower = new LogFollower(api, id, target, batch => {
      buffer.current.append(batch);
      setLines(buffer.current.lines);
    });
    follower
      .start(LOG_TAIL)
      .catch(e => live && setError(messageOf(e)))
      .finally(() => live && setFollow(false));
    return () => {
      live = false;
      follower.stop();
    };
  }, [api, id, replica, follow, reload]);

  // Keep the newest line in view unless the user scrolled up to read.
  React.useLayoutEffect(() => {
    const node = view.current;
    if (node && stick.current) {
      node.scrollTop = node.scrollHeight;
    }
  }, [lines]);

  const onScroll = () => {
    const node = view.current;
    if (!node) {
      return;
    }
    const bottom = node.scrollHeight - node.scrollTop - node.clientHeight < 8;
    stick.current = bottom;
    setAtBottom(bottom);
  };

  const scrollToBottom = () => {
    const node = view.current;
    if (node) {
      node.scrollTop = node.scrollHeight;
      stick.current = true;
      setAtBottom(true);
    }
  };

  const download = async () => {
    try {
      const blob = await api.downloadLogs(id, replica || undefined);
      saveBlob(blob, logFileName(id, replica || undefined));
    } catch (e) {
      setError(messageOf(e));
    }
  };

  return (
    <div className="jp-PrimeHub-logs">
      <div className="jp-PrimeHub-row jp-PrimeHub-logs-toolbar">
        <label htmlFor={selectId}>Replica</label>
        <select
          id={selectId}
          value={replica}
          onChange={e => setReplica(e.target.value)}
        >
          <option value="">All replicas</option>
          {replicas.map(name => (
            <option key={name} value={name}>
              {name}
            </option>
          ))}
        </select>
        <label className="jp-PrimeHub-check">
          <input
            type="checkbox"
            checked={follow}
            onChange={e => setFollow(e.target.checked)}
          />
          Follow
        </label>
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={() => setReload(n => n + 1)}
          disabled={follow}
        >
          Reload
        </button>
        <button
          type="button"
          className="jp-PrimeHub-button"
          onClick={scrollToBottom}
        >
          Scroll to bottom
        </button>
        <button type="button" className="jp-PrimeHub-button" onClick={download}>
          Download
        </button>
        <span className="jp-PrimeHub-muted" aria-live="polite">
          {loading
            ? 'Loading…'
            : `${lines.length} lines${follow ? ', following' : ''}`}
          {!atBottom && follow ? ' (scrolled up: new lines are below)' : ''}
        </span>
      </div>
      <ErrorMessage message={error} />
      <pre
        className="jp-PrimeHub-log-view"
        ref={view}
        onScroll={onScroll}
        tabIndex={0}
        role="log"
        aria-live="off"
        aria-label={`Logs of ${deployment.spec.displayName}`}
      >
        {lines.length === 0 && !loading
          ? 'No log lines yet.'
          : lines.join('\n')}
      </pre>
    </div>
  );
}
